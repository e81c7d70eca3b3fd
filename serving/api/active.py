"""The cached active version: one poller per process keeps it fresh, handlers just read it."""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from pymongo.asynchronous.database import AsyncDatabase

from serving.store import ACTIVE_ID, POPULAR_ID, STATE, VERSIONS, popular_collection

logger = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class ActiveState:
    """What handlers need about the active version, swapped as a whole when it changes."""

    version: str
    generated_at: datetime | None
    switched_at: datetime | None
    popular: list[dict[str, Any]] = field(default_factory=list)


class ActiveVersionCache:
    """Holds the current `ActiveState` (None before the first activation)."""

    def __init__(self, db: AsyncDatabase) -> None:
        self._db = db
        self.state: ActiveState | None = None
        self.last_error: str | None = None

    async def refresh(self) -> ActiveState | None:
        """Read the pointer; on a change, load the new version's popular list, then swap."""
        pointer = await self._db[STATE].find_one({"_id": ACTIVE_ID})
        if pointer is None:
            if self.state is not None:
                logger.warning("active pointer disappeared; serving nothing")
            self.state = None
            return None
        version = pointer["version"]
        current = self.state
        if current is not None and current.version == version:
            return current
        popular = await self._db[popular_collection(version)].find_one({"_id": POPULAR_ID})
        meta = await self._db[VERSIONS].find_one({"_id": version}, {"generated_at": 1})
        if popular is None:
            logger.warning("version %s has no popular list; unknown users get none", version)
        self.state = ActiveState(
            version=version,
            generated_at=(meta or {}).get("generated_at") or (popular or {}).get("generated_at"),
            switched_at=pointer.get("switched_at"),
            popular=(popular or {}).get("items", []),
        )
        logger.info("now serving version %s", version)
        return self.state

    async def run(self, interval: float) -> None:
        """Poll forever; errors are logged and the last known state keeps serving."""
        while True:
            try:
                await self.refresh()
                self.last_error = None
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - keep polling whatever happened
                if self.last_error is None:
                    logger.warning("polling the active version failed: %s", exc)
                self.last_error = str(exc)
            await asyncio.sleep(interval)
