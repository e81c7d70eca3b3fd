"""The publish lock: a lease in MongoDB, so two publishes never switch what is served at once.

The lock is one document in ``serving_state``::

    {_id: "publish_lock", token: str, holder: str, host: str, pid: int,
     acquired_at: datetime, renewed_at: datetime, expires_at: datetime}

- acquire: one atomic conditional upsert that succeeds when the document is absent or its lease
  has expired (an unexpired lease makes the upsert collide with the existing `_id`);
- hold: a background thread renews the lease every third of its TTL, only while the document
  still carries our token; `ensure_held()` renews at once and raises when the lease was lost
  (call it right before switching pointers);
- release: delete the document, only if it is still ours;
- a crashed holder stops renewing, so its lease runs out after at most one TTL and the next
  caller takes over -- nothing outside MongoDB (no Prefect server) is needed, and nothing can
  stay wedged longer than the TTL;
- a waiting caller logs who holds the lock, since when and when the lease expires, and gives up
  after its timeout with a `PublishLockTimeout` that says the same.

Leases compare the callers' clocks (`expires_at` is written by the holder): hosts that publish
need clocks within a small fraction of the TTL of each other (NTP).
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from types import TracebackType
from typing import Any

from pymongo.database import Database
from pymongo.errors import DuplicateKeyError, PyMongoError

from recsys.errors import PublishError, PublishLockTimeout
from recsys.mongo import CODEC_OPTIONS, PUBLISH_LOCK_ID, SERVING_STATE
from recsys.settings import Settings

logger = logging.getLogger(__name__)

_STILL_WAITING_LOG_S = 60.0


def _when(value: datetime | None) -> str:
    return value.isoformat(timespec="seconds") if value else "?"


def _describe(doc: dict[str, Any] | None) -> str:
    """Who holds the lock, since when and until when (for waiting callers)."""
    if not doc:
        return "another publish (the lock changed hands while we looked)"
    return (f"{doc.get('holder') or 'an unnamed holder'} (pid {doc.get('pid')} on "
            f"{doc.get('host')}) since {_when(doc.get('acquired_at'))}, lease expires at "
            f"{_when(doc.get('expires_at'))}")


class PublishLock:
    """The publish lease; use it as a context manager (or `acquire` / `release`).

    Args:
        db: the serving database.
        ttl_s: lease length; renewed every `ttl_s / 3` while held.
        timeout_s: how long `acquire` waits for another holder before giving up.
        holder: who holds it, for the messages of waiting callers (e.g. "models promote v3").
        poll_s: how often a waiting caller retries.
    """

    def __init__(self, db: Database, *, ttl_s: float, timeout_s: float, holder: str,
                 poll_s: float = 0.5) -> None:
        if ttl_s <= 0:
            raise ValueError("ttl_s must be > 0")
        self._coll = db.with_options(codec_options=CODEC_OPTIONS)[SERVING_STATE]
        self.ttl = timedelta(seconds=ttl_s)
        self.timeout_s = timeout_s
        self.holder = holder
        self.poll_s = poll_s
        self.token = uuid.uuid4().hex
        self._stop = threading.Event()
        self._lost = threading.Event()
        self._heartbeat: threading.Thread | None = None

    @property
    def held(self) -> bool:
        """True between a successful `acquire` and `release`, unless the lease was lost."""
        return self._heartbeat is not None and not self._lost.is_set()

    def holder_document(self) -> dict[str, Any] | None:
        """The lock document as it is now (None when nobody holds it)."""
        return self._coll.find_one({"_id": PUBLISH_LOCK_ID})

    # ---------------------------------------------------------------- acquire

    def try_acquire(self) -> bool:
        """One attempt: take the lock if it is free or its lease has expired."""
        now = datetime.now(UTC)
        try:
            self._coll.update_one(
                {"_id": PUBLISH_LOCK_ID, "expires_at": {"$lte": now}},
                {"$set": {"token": self.token, "holder": self.holder,
                          "host": socket.gethostname(), "pid": os.getpid(),
                          "acquired_at": now, "renewed_at": now, "expires_at": now + self.ttl}},
                upsert=True,
            )
        except DuplicateKeyError:  # the document exists and its lease has not expired
            return False
        return True

    def acquire(self) -> None:
        """Wait for the lock (up to `timeout_s`), then keep renewing it in the background.

        Raises:
            PublishLockTimeout: still held by someone else after `timeout_s`; names the holder.
        """
        if self._heartbeat is not None:
            raise RuntimeError("the publish lock is already held by this object")
        started = time.monotonic()
        seen_token: str | None = None
        logged_at = started
        while not self.try_acquire():
            doc = self.holder_document()
            waited = time.monotonic() - started
            if waited >= self.timeout_s:
                raise PublishLockTimeout(
                    f"gave up after {self.timeout_s:g}s waiting for the publish lock, held by "
                    f"{_describe(doc)}; a crashed holder's lease runs out by itself, or raise "
                    "RECSYS_PUBLISH_LOCK_TIMEOUT_S to wait longer")
            token = doc.get("token") if doc else None
            if token != seen_token or time.monotonic() - logged_at >= _STILL_WAITING_LOG_S:
                logger.info("%s waits for the publish lock, held by %s (waited %.0fs of %gs)",
                            self.holder, _describe(doc), waited, self.timeout_s)
                seen_token, logged_at = token, time.monotonic()
            time.sleep(max(0.0, min(self.poll_s, self.timeout_s - waited)))
        logger.info("%s holds the publish lock (lease %gs)", self.holder,
                    self.ttl.total_seconds())
        self._stop.clear()
        self._lost.clear()
        self._heartbeat = threading.Thread(target=self._renew_forever, daemon=True,
                                           name="publish-lock-heartbeat")
        self._heartbeat.start()

    # ---------------------------------------------------------------- hold

    def _renew(self) -> bool:
        now = datetime.now(UTC)
        result = self._coll.update_one(
            {"_id": PUBLISH_LOCK_ID, "token": self.token},
            {"$set": {"renewed_at": now, "expires_at": now + self.ttl}})
        return result.matched_count == 1

    def _renew_forever(self) -> None:
        interval = self.ttl.total_seconds() / 3
        while not self._stop.wait(interval):
            try:
                if not self._renew():
                    self._lost.set()
                    logger.error("%s lost the publish lock: its lease expired and another "
                                 "publish took it over", self.holder)
                    return
            except PyMongoError as exc:  # keep trying; the lease covers short outages
                logger.warning("renewing the publish lock failed: %s", exc)

    def ensure_held(self) -> None:
        """Renew the lease now; call it right before changing what is served.

        Raises:
            PublishError: the lease was lost (it expired and another publish took it over).
        """
        if self._heartbeat is None:
            raise PublishError("the publish lock is not held")
        if self._lost.is_set() or not self._renew():
            self._lost.set()
            raise PublishError(f"{self.holder} lost the publish lock (its lease expired and "
                               "another publish took it over); nothing was switched")

    # ---------------------------------------------------------------- release

    def release(self) -> None:
        """Stop renewing and delete the lock document if it is still ours."""
        if self._heartbeat is None:
            return
        self._stop.set()
        self._heartbeat.join()
        self._heartbeat = None
        try:
            deleted = self._coll.delete_one({"_id": PUBLISH_LOCK_ID, "token": self.token})
        except PyMongoError as exc:  # the lease then runs out by itself
            logger.warning("releasing the publish lock failed (%s); it expires within %gs",
                           exc, self.ttl.total_seconds())
            return
        if deleted.deleted_count != 1:
            logger.warning("%s released a publish lock it no longer held", self.holder)
        else:
            logger.info("%s released the publish lock", self.holder)

    def __enter__(self) -> PublishLock:
        self.acquire()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.release()


@contextmanager
def publish_lock(db: Database, settings: Settings, *, holder: str,
                 timeout_s: float | None = None) -> Iterator[PublishLock]:
    """Hold the publish lock while the body runs.

    Args:
        db: the serving database.
        settings: `publish_lock_ttl_s` and `publish_lock_timeout_s`.
        holder: who is publishing, for the messages of waiting callers.
        timeout_s: overrides `settings.publish_lock_timeout_s` (e.g. a shorter wait for HTTP).

    Raises:
        PublishLockTimeout: another publish held the lock for longer than the timeout.
    """
    lock = PublishLock(db, ttl_s=settings.publish_lock_ttl_s, holder=holder,
                       timeout_s=settings.publish_lock_timeout_s if timeout_s is None
                       else timeout_s)
    with lock:
        yield lock
