"""A per-process cache of values computed once per active model version (catalogue totals).

What a version serves never changes, so an aggregate over it (catalogue counts per genre, the
version's own document) is computed on the first request and kept until another version is
served. Concurrent first requests wait for one computation instead of each running it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any


class VersionCache:
    """Values keyed by name, for one model version at a time."""

    def __init__(self) -> None:
        self._version: str | None = None
        self._values: dict[str, Any] = {}
        self._locks: dict[str, asyncio.Lock] = {}

    def _for(self, version: str) -> None:
        if version != self._version:  # another version is served now: forget the old one
            self._version, self._values, self._locks = version, {}, {}

    async def get(self, version: str, name: str,
                  compute: Callable[[], Awaitable[Any]]) -> Any:
        """The value `name` of `version`, computing it with `compute()` when absent.

        A failed computation is not cached (the next request tries again).
        """
        self._for(version)
        if name in self._values:
            return self._values[name]
        lock = self._locks.setdefault(name, asyncio.Lock())
        async with lock:
            if self._version == version and name in self._values:
                return self._values[name]
            value = await compute()
            if self._version == version:
                self._values[name] = value
            return value
