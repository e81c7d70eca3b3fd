"""Regression (issue 13): a publish killed by SIGKILL wedged every later run.

The publish slot lived in the run's temporary Prefect server and was never given back, so the
next run waited silently for an hour. The lock is now a lease in MongoDB (serving/lock.py): a
holder killed with `kill -9` stops renewing it, and the next publish takes over at most one TTL
after the last renewal, saying what it waits for.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import pytest

from features.snapshot import build_snapshot
from recsys.mongo import PUBLISH_LOCK_ID, SERVING_STATE, open_database
from recsys.settings import Settings
from serving.publish import publish_model
from tests.faults.conftest import REPO, serve_baseline, served
from tests.features.conftest import random_batch
from training.stage import score_run_model, train_run_model

pytestmark = [pytest.mark.faults, pytest.mark.integration]

TTL_S = 3
MODEL_SETTINGS = {"top_n": 5, "similar_n": 3, "popular_n": 5, "eval_k": 3, "explain_n": 0,
                  "factors": 2, "regularization": 0.1, "alpha": 5.0, "iterations": 3, "seed": 3}
HOLDER = """
import sys, time
from recsys.mongo import open_database
from recsys.settings import Settings
from serving.lock import publish_lock

settings = Settings(mongodb_uri=sys.argv[1], mongodb_db=sys.argv[2], publish_lock_ttl_s={ttl})
with open_database(settings) as db, publish_lock(db, settings, holder="crashing publisher"):
    print("held", flush=True)
    time.sleep(600)
"""


@pytest.fixture
def settings(tmp_path: Path, mongo_uri: str, mongo_db_name: str) -> Settings:
    """A registry with one trained, scored model `v1`; the lock lease is TTL_S long."""
    settings = Settings(data_dir=tmp_path / "data", mongodb_uri=mongo_uri,
                        mongodb_db=mongo_db_name, publish_lock_ttl_s=TTL_S,
                        publish_lock_timeout_s=60, **MODEL_SETTINGS)
    raw = random_batch(tmp_path / "raw", seed=1, n=400, start=datetime(2024, 1, 1, tzinfo=UTC),
                       end=datetime(2024, 3, 1, tzinfo=UTC))
    manifest = build_snapshot(raw, features_root=settings.features_dir, snapshot_id="s1")
    model_dir, _ = train_run_model(manifest, version="v1", settings=settings)
    score_run_model(model_dir, manifest, settings=settings)
    return settings


def test_a_publish_killed_holding_the_lock_delays_the_next_one_by_at_most_its_ttl(
    settings: Settings, caplog: pytest.LogCaptureFixture
) -> None:
    serve_baseline(settings.mongodb_uri, settings.mongodb_db)
    holder = subprocess.Popen(  # noqa: S603 - fixed argv
        [sys.executable, "-c", HOLDER.format(ttl=TTL_S), settings.mongodb_uri,
         settings.mongodb_db], cwd=REPO, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
        os.kill(holder.pid, signal.SIGKILL)
        killed_at = time.monotonic()
        assert holder.wait(10) == -signal.SIGKILL
    finally:
        holder.kill()
    with open_database(settings) as db:
        lease = db[SERVING_STATE].find_one({"_id": PUBLISH_LOCK_ID})
    assert lease and lease["holder"] == "crashing publisher" and lease["pid"] == holder.pid

    with caplog.at_level(logging.INFO, logger="serving.lock"):
        result = publish_model(settings, "v1", holder="the next run")
    took = time.monotonic() - killed_at

    assert result.version == "v1" and result.previous_version is not None
    assert served(settings.mongodb_uri, settings.mongodb_db)["version"] == "v1"
    # the lease was renewed at most TTL/3 before the kill: it ran out 2-3 s after it
    assert TTL_S * 2 / 3 - 0.5 <= took <= TTL_S + 5, f"took {took:.1f}s, lease {TTL_S}s"
    waits = [r.getMessage() for r in caplog.records if "waits for the publish lock" in
             r.getMessage()]
    assert waits, caplog.text
    assert waits[0].startswith(f"the next run waits for the publish lock, held by crashing "
                               f"publisher (pid {holder.pid} on ")
    assert " since " in waits[0] and "lease expires at " in waits[0]
