"""The publish lock (a lease in MongoDB) against the real secantusd-py server."""

from __future__ import annotations

import logging
import threading
import time

import pytest
from pymongo.database import Database

from recsys.errors import PublishError, PublishLockTimeout
from recsys.mongo import PUBLISH_LOCK_ID, SERVING_STATE
from recsys.settings import Settings
from serving.lock import PublishLock, publish_lock

pytestmark = pytest.mark.integration


def _lock(db: Database, holder: str, *, ttl_s: float = 3.0, timeout_s: float = 30.0
          ) -> PublishLock:
    return PublishLock(db, ttl_s=ttl_s, timeout_s=timeout_s, holder=holder, poll_s=0.05)


def test_two_threads_never_hold_it_together(db: Database) -> None:
    inside, overlap, entries = [0], [0], []
    guard = threading.Lock()

    def worker(name: str) -> None:
        for i in range(5):
            with _lock(db, f"{name}-{i}"):
                with guard:
                    inside[0] += 1
                    overlap[0] = max(overlap[0], inside[0])
                    entries.append(name)
                time.sleep(0.05)
                with guard:
                    inside[0] -= 1

    threads = [threading.Thread(target=worker, args=(name,)) for name in ("a", "b")]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert overlap[0] == 1
    assert sorted(entries) == ["a"] * 5 + ["b"] * 5
    assert db[SERVING_STATE].find_one({"_id": PUBLISH_LOCK_ID}) is None  # released


def test_a_crashed_holder_is_taken_over_after_its_ttl(db: Database) -> None:
    crashed = _lock(db, "crashed publish", ttl_s=1.0)
    assert crashed.try_acquire()  # took the lock, then died: no heartbeat, no release
    taken_at = time.monotonic()
    successor = _lock(db, "successor", timeout_s=10)
    successor.acquire()
    try:
        waited = time.monotonic() - taken_at
        assert 0.8 <= waited < 5, waited  # waited for the lease to run out, not longer
        doc = db[SERVING_STATE].find_one({"_id": PUBLISH_LOCK_ID})
        assert doc["holder"] == "successor" and doc["token"] == successor.token
        assert doc["expires_at"] > doc["acquired_at"]
    finally:
        successor.release()


def test_heartbeat_keeps_the_lease_and_a_waiter_times_out_naming_the_holder(
    db: Database, caplog: pytest.LogCaptureFixture
) -> None:
    holder = _lock(db, "models promote v7", ttl_s=2.0)
    holder.acquire()
    try:
        time.sleep(4.5)  # more than two TTLs: only the heartbeat keeps it
        waiter = _lock(db, "pipeline publish v8", timeout_s=1.0)
        started = time.monotonic()
        with caplog.at_level(logging.INFO, logger="serving.lock"), \
                pytest.raises(PublishLockTimeout) as error:
            waiter.acquire()
        assert 0.9 <= time.monotonic() - started < 5
        message = str(error.value)
        assert message.startswith("gave up after 1s waiting for the publish lock, held by "
                                  "models promote v7 (pid ")
        for part in (" since ", "lease expires at ", "RECSYS_PUBLISH_LOCK_TIMEOUT_S"):
            assert part in message
        assert error.value.status_code == 409
        assert "pipeline publish v8 waits for the publish lock, held by models promote v7" \
            in caplog.text
        holder.ensure_held()  # still ours
    finally:
        holder.release()
    # once released, the next caller gets it at once
    with _lock(db, "next", timeout_s=0.5) as after:
        assert after.held


def test_a_holder_that_lost_its_lease_cannot_switch_nor_release_the_new_one(
    db: Database
) -> None:
    old = _lock(db, "old", ttl_s=1.0)
    old.acquire()
    old._stop.set()  # the heartbeat stalls (e.g. a paused process); the lease runs out
    old._heartbeat.join()  # type: ignore[union-attr]
    new = _lock(db, "new", timeout_s=10)
    new.acquire()
    try:
        with pytest.raises(PublishError, match="old lost the publish lock"):
            old.ensure_held()
        old.release()  # must not delete the new holder's lease
        assert db[SERVING_STATE].find_one({"_id": PUBLISH_LOCK_ID})["token"] == new.token
        new.ensure_held()
    finally:
        new.release()


def test_publish_lock_reads_its_settings(db: Database) -> None:
    settings = Settings(publish_lock_ttl_s=5, publish_lock_timeout_s=0)
    assert (Settings().publish_lock_ttl_s, Settings().publish_lock_timeout_s) == (60.0, 3600.0)
    with publish_lock(db, settings, holder="first") as lock:
        assert lock.ttl.total_seconds() == 5 and lock.timeout_s == 0
        with pytest.raises(PublishLockTimeout, match="held by first"):
            with publish_lock(db, settings, holder="second"):
                pass
        with pytest.raises(PublishLockTimeout, match="gave up after 0.2s"):
            with publish_lock(db, settings, holder="second", timeout_s=0.2):
                pass
