"""The cached active version: one poller per process keeps it fresh, handlers just read it."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import pymongo
from pymongo.asynchronous.database import AsyncDatabase

from recsys.mongo import (
    ACTIVE_POINTER_ID,
    MODEL_VERSIONS,
    POPULAR_ID,
    SERVING_STATE,
    popular_collection,
)

logger = logging.getLogger(__name__)

POLL_TIMEOUT_S = 1.0


@dataclass(frozen=True, slots=True)
class ActiveState:
    """What handlers need about the active version, swapped as a whole when it changes.

    Attributes:
        attributes: item attributes denormalised into this version's lists (filterable).
        explanations: whether recommendations carry `because` lists.
        previous: the version served before the switch to this one (None at first).
    """

    version: str
    generated_at: datetime | None
    switched_at: datetime | None
    popular: list[dict[str, Any]] = field(default_factory=list)
    attributes: frozenset[str] = frozenset()
    explanations: bool = False
    previous: str | None = None


class ActiveVersionCache:
    """Holds the current `ActiveState` (None before the first activation).

    Args:
        db: the serving database.
        on_change: called with the new state (or None) whenever the version changes.
        on_poll: called with None after a successful poll, or with the exception of a failed one.
    """

    def __init__(
        self,
        db: AsyncDatabase,
        *,
        on_change: Callable[[ActiveState | None], None] | None = None,
        on_poll: Callable[[BaseException | None], None] | None = None,
    ) -> None:
        self._db = db
        self._on_change = on_change
        self._on_poll = on_poll
        self.state: ActiveState | None = None
        self.last_error: str | None = None
        self._lock = asyncio.Lock()
        self._stopping = asyncio.Event()

    def stop(self) -> None:
        """Ask `run` to return (pymongo may swallow a task cancellation mid-operation)."""
        self._stopping.set()

    async def refresh(self) -> ActiveState | None:
        """Read the pointer; on a change, load the new version's popular list, then swap."""
        async with self._lock:
            pointer = await self._db[SERVING_STATE].find_one({"_id": ACTIVE_POINTER_ID})
            if pointer is None:
                if self.state is not None:
                    logger.warning("active pointer disappeared; serving nothing")
                    self._swap(None)
                return None
            version = pointer["version"]
            current = self.state
            if current is not None and current.version == version:
                return current
            popular = await self._db[popular_collection(version)].find_one({"_id": POPULAR_ID})
            meta = await self._db[MODEL_VERSIONS].find_one(
                {"_id": version}, {"generated_at": 1, "features": 1}
            )
            if popular is None:
                logger.warning("version %s has no popular list; unknown users get none", version)
            features = (meta or {}).get("features") or {}
            self._swap(ActiveState(
                version=version,
                generated_at=(meta or {}).get("generated_at")
                or (popular or {}).get("generated_at"),
                switched_at=pointer.get("switched_at"),
                popular=(popular or {}).get("items", []),
                attributes=frozenset(features.get("item_attributes") or ()),
                explanations=bool(features.get("explanations")),
                previous=pointer.get("previous"),
            ))
            logger.info("now serving version %s", version, extra={"model_version": version})
            return self.state

    def _swap(self, state: ActiveState | None) -> None:
        self.state = state
        if self._on_change is not None:
            self._on_change(state)

    async def run(self, interval: float) -> None:
        """Poll forever; errors are logged and the last known state keeps serving."""
        while not self._stopping.is_set():
            try:
                with pymongo.timeout(POLL_TIMEOUT_S):
                    await self.refresh()
                self.last_error = None
                if self._on_poll is not None:
                    self._on_poll(None)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - keep polling whatever happened
                if self._stopping.is_set():
                    return
                if self.last_error is None:
                    logger.warning("polling the active version failed: %s", exc)
                self.last_error = str(exc)
                if self._on_poll is not None:
                    self._on_poll(exc)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), interval)
