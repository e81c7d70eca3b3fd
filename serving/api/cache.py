"""The in-process document cache and the MongoDB circuit breaker ("guard").

Serving documents are immutable per version, so the cache never expires entries by time: keys
include the model version, and the whole cache is cleared the moment the active version changes.
"""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator, Hashable
from contextlib import asynccontextmanager
from typing import Any

import pymongo
from cachetools import LRUCache
from pymongo.errors import ConnectionFailure, PyMongoError

from recsys.errors import ServiceUnavailable
from serving.api.metrics import ApiMetrics

logger = logging.getLogger(__name__)

MISSING: Any = object()  # "not cached"; a cached None means "looked up, does not exist"


class DocumentCache:
    """An LRU of decoded documents keyed by ``(version, kind, id)``.

    Args:
        maxsize: entries kept; 0 disables caching.
        metrics: hit/miss counters and the size gauge go here.
    """

    def __init__(self, maxsize: int, metrics: ApiMetrics) -> None:
        self._lru: LRUCache[Hashable, Any] | None = LRUCache(maxsize) if maxsize > 0 else None
        self._metrics = metrics

    def get(self, version: str, kind: str, key: str) -> Any:
        """The cached value, or `MISSING`."""
        value = MISSING if self._lru is None else self._lru.get((version, kind, key), MISSING)
        (self._metrics.cache_miss if value is MISSING else self._metrics.cache_hit).inc()
        return value

    def put(self, version: str, kind: str, key: str, value: Any) -> None:
        if self._lru is not None:
            self._lru[(version, kind, key)] = value
            self._metrics.cache_entries.set(len(self._lru))

    def clear(self) -> None:
        """Forget everything (called when the active version switches)."""
        if self._lru is not None:
            self._lru.clear()
            self._metrics.cache_entries.set(0)

    def __len__(self) -> int:
        return 0 if self._lru is None else len(self._lru)


def is_unavailable(exc: BaseException) -> bool:
    """True for errors that mean "MongoDB cannot be reached now" (not a bad query)."""
    return isinstance(exc, ConnectionFailure) or bool(getattr(exc, "timeout", False))


class MongoGuard:
    """Fail fast while MongoDB is known to be down.

    After a connection failure or timeout, reads are refused at once (503) for
    `retry_after` seconds, or until the active-version poller reaches MongoDB again.

    Args:
        metrics: counts errors by kind.
        timeout_s: deadline of each guarded read.
        retry_after: seconds to refuse reads after a failure (also the `Retry-After` value).
    """

    def __init__(self, metrics: ApiMetrics, *, timeout_s: float, retry_after: int) -> None:
        self._metrics = metrics
        self.timeout_s = timeout_s
        self.retry_after = retry_after
        self._open_until = 0.0

    @property
    def is_open(self) -> bool:
        return time.monotonic() < self._open_until

    def failure(self, exc: BaseException | None = None) -> None:
        if not self.is_open:
            logger.warning("MongoDB unavailable (%s); failing fast for %ss", exc, self.retry_after)
        self._open_until = time.monotonic() + self.retry_after

    def success(self) -> None:
        if self._open_until:
            logger.info("MongoDB reachable again")
        self._open_until = 0.0

    @asynccontextmanager
    async def read(self) -> AsyncIterator[None]:
        """Guard one read: refuse while open, apply the deadline, turn outages into 503."""
        if self.is_open:
            self._metrics.mongo_errors.labels("fail_fast").inc()
            raise ServiceUnavailable("MongoDB is unavailable")
        try:
            with pymongo.timeout(self.timeout_s):
                yield
        except PyMongoError as exc:
            if is_unavailable(exc):
                self._metrics.mongo_errors.labels("unavailable").inc()
                self.failure(exc)
                raise ServiceUnavailable("MongoDB is unavailable") from exc
            self._metrics.mongo_errors.labels("error").inc()
            raise
