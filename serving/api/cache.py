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
from pymongo.errors import ConnectionFailure, PyMongoError, ServerSelectionTimeoutError

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


def is_outage(exc: BaseException) -> bool:
    """True for connection-level errors: MongoDB cannot be reached (no server selectable, a
    connection refused, reset or closed). Only these open the breaker."""
    if isinstance(exc, ServerSelectionTimeoutError):
        return True
    return isinstance(exc, ConnectionFailure) and not getattr(exc, "timeout", False)


def is_timeout(exc: BaseException) -> bool:
    """True when one operation ran out of time (a slow query, a busy pool), not an outage."""
    return bool(getattr(exc, "timeout", False)) and not is_outage(exc)


def is_unavailable(exc: BaseException) -> bool:
    """True for errors that mean "MongoDB cannot answer now" (not a bad query): an outage or a
    timeout; both are a 503 with Retry-After."""
    return is_outage(exc) or is_timeout(exc)


class MongoGuard:
    """Fail fast while MongoDB is known to be down (a circuit breaker).

    After a connection-level error (`is_outage`), reads are refused at once (503) for
    `retry_after` seconds, or until the active-version poller reaches MongoDB again. A read that
    only runs past its deadline (`is_timeout`) is a 503 for its own caller and leaves the breaker
    closed: one slow query is not an outage.

    Args:
        metrics: counts errors by kind (unavailable, timeout, fail_fast, error).
        timeout_s: deadline of each guarded read.
        retry_after: seconds to refuse reads after an outage (also the `Retry-After` value).
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
        """Open the breaker (called on an outage)."""
        if not self.is_open:
            logger.warning("MongoDB unavailable (%s); failing fast for %ss", exc, self.retry_after)
        self._open_until = time.monotonic() + self.retry_after

    def success(self) -> None:
        if self._open_until:
            logger.info("MongoDB reachable again")
        self._open_until = 0.0

    @asynccontextmanager
    async def read(self) -> AsyncIterator[None]:
        """Guard one read: refuse while open, apply the deadline, turn outages and timeouts
        into 503 (only outages open the breaker)."""
        if self.is_open:
            self._metrics.mongo_errors.labels("fail_fast").inc()
            raise ServiceUnavailable("MongoDB is unavailable")
        try:
            with pymongo.timeout(self.timeout_s):
                yield
        except PyMongoError as exc:
            if is_outage(exc):
                self._metrics.mongo_errors.labels("unavailable").inc()
                self.failure(exc)
                raise ServiceUnavailable("MongoDB is unavailable") from exc
            if is_timeout(exc):
                self._metrics.mongo_errors.labels("timeout").inc()
                logger.warning("a MongoDB read ran past its %.0f ms deadline: %s",
                               self.timeout_s * 1000, exc)
                raise ServiceUnavailable(
                    f"MongoDB did not answer within {self.timeout_s * 1000:.0f} ms") from exc
            self._metrics.mongo_errors.labels("error").inc()
            raise
