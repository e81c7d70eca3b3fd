"""API keys (`X-API-Key`), a per-caller token-bucket rate limit, and the throttle on failed
authentications."""

from __future__ import annotations

import hmac
import time
from dataclasses import dataclass

from cachetools import LRUCache

from recsys.errors import Forbidden, Unauthorized

API_KEY_HEADER = "X-API-Key"

AUTH_FAILURE_RATE = 1.0
"""Failed authentications (missing or unknown key) allowed per second per client address, after
a burst of `AUTH_FAILURE_BURST`; beyond that the address is refused (429) before its key is even
looked at, so guessing keys costs time."""
AUTH_FAILURE_BURST = 20


def parse_keys(value: str) -> tuple[str, ...]:
    """Comma-separated keys, blanks dropped."""
    return tuple(k.strip() for k in value.split(",") if k.strip())


def _matches(key: str, keys: tuple[str, ...]) -> bool:
    # compare against every key (no early exit) in constant time per key
    found = False
    for candidate in keys:
        found |= hmac.compare_digest(key.encode(), candidate.encode())
    return found


@dataclass(frozen=True)
class KeyChecker:
    """`keys` empty means the API is open; admin endpoints always need one of `admin_keys`."""

    keys: tuple[str, ...]
    admin_keys: tuple[str, ...]

    def check(self, key: str | None, *, admin: bool = False) -> str | None:
        """The validated key, or None when the API is open (no keys configured; any header is
        then ignored).

        Raises:
            Unauthorized: no key, or an unknown one.
            Forbidden: a valid key without admin rights, or admin endpoints are disabled.
        """
        if admin:
            if not self.admin_keys:
                raise Forbidden("admin endpoints are disabled: set RECSYS_ADMIN_API_KEYS")
            if not key:
                raise Unauthorized(f"missing {API_KEY_HEADER} header")
            if _matches(key, self.admin_keys):
                return key
            if _matches(key, self.keys):
                raise Forbidden("this API key has no admin rights")
            raise Unauthorized("invalid API key")
        if not self.keys:
            return None
        if not key:
            raise Unauthorized(f"missing {API_KEY_HEADER} header")
        if not (_matches(key, self.keys) or _matches(key, self.admin_keys)):
            raise Unauthorized("invalid API key")
        return key


class TokenBucketLimiter:
    """`rate` requests/s with bursts of `burst`, per caller (a string the caller names).

    Buckets live in an LRU of `max_callers`, so memory stays bounded. `rate` 0 disables it.
    """

    def __init__(self, rate: float, burst: int, *, max_callers: int = 100_000) -> None:
        self.rate = rate
        self.burst = float(burst)
        self._buckets: LRUCache[str, list[float]] = LRUCache(max_callers)

    def wait(self, caller: str) -> float:
        """Seconds until `caller` has a token (0 when it has one now); takes nothing."""
        bucket = self._buckets.get(caller) if self.rate > 0 else None
        if bucket is None:
            return 0.0
        tokens = min(self.burst, bucket[0] + (time.monotonic() - bucket[1]) * self.rate)
        return 0.0 if tokens >= 1.0 else (1.0 - tokens) / self.rate

    def allow(self, caller: str) -> float:
        """0 when allowed (a token is taken), else the seconds until a token is available."""
        if self.rate <= 0:
            return 0.0
        now = time.monotonic()
        bucket = self._buckets.get(caller)
        if bucket is None:
            self._buckets[caller] = [self.burst - 1.0, now]
            return 0.0
        tokens = min(self.burst, bucket[0] + (now - bucket[1]) * self.rate)
        bucket[1] = now
        if tokens >= 1.0:
            bucket[0] = tokens - 1.0
            return 0.0
        bucket[0] = tokens
        return (1.0 - tokens) / self.rate
