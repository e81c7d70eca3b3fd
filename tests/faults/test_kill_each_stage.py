"""`kill -9` of `recsys pipeline` at each stage boundary and inside publish.

One chain of runs on one batch: run k is killed at stage k, so it also shows that a run gets
past everything the previous kills left behind (a stored batch, a snapshot without its task
result, a model without scores, scores without a gate, a version written into MongoDB with the
lock still held). After every kill the version served before is still served and verifies; the
last run, left alone, serves a new version that verifies.
"""

from __future__ import annotations

import re
import signal
from pathlib import Path

import pytest
from pymongo import MongoClient

from recsys.mongo import PUBLISH_LOCK_ID, SERVING_STATE
from tests.faults.conftest import (
    BASELINE,
    STAGES,
    cli_env,
    kill_session,
    serve_baseline,
    served,
    start_cli,
)

pytestmark = [pytest.mark.faults, pytest.mark.integration, pytest.mark.slow]

LEASE_S = 5


def test_kill_9_at_each_stage_then_a_rerun_serves_a_verified_version(
    fault_batch: Path, mongo_uri: str, mongo_db_name: str, prefect_home: Path,
    prefect_api: str, tmp_path: Path
) -> None:
    serve_baseline(mongo_uri, mongo_db_name)
    before = served(mongo_uri, mongo_db_name)
    env = cli_env(mongo_uri=mongo_uri, db=mongo_db_name, data_dir=tmp_path / "data",
                  prefect_home=prefect_home, prefect_api=prefect_api,
                  publish_lock_ttl_s=str(LEASE_S))
    args = ["pipeline", "--input", str(fault_batch)]

    for stage in STAGES:
        run = start_cli(args, env, tmp_path / f"kill-{stage}.log", fault=f"{stage}:kill")
        try:
            assert run.wait() == -signal.SIGKILL, run.output()[-3000:]
        finally:
            kill_session(run.pid)
        assert f"FAULT: kill -9 at {stage}" in run.output()
        assert served(mongo_uri, mongo_db_name) == before, f"served changed after {stage}"

    # the publish was killed holding the lock, its version written but not switched
    with MongoClient(mongo_uri, tz_aware=True) as client:
        lease = client[mongo_db_name][SERVING_STATE].find_one({"_id": PUBLISH_LOCK_ID})
    assert lease and lease["pid"] == run.pid and lease["holder"].startswith("pipeline publish ")

    rerun = start_cli(args, env, tmp_path / "rerun.log")
    try:
        assert rerun.wait() == 0, rerun.output()[-5000:]
    finally:
        kill_session(rerun.pid)
    published = re.search(r"published and activated model version (\S+) in", rerun.output())
    assert published, rerun.output()[-3000:]
    after = served(mongo_uri, mongo_db_name)
    assert after == {"version": published.group(1), "users": 200}
    assert after["version"] != BASELINE
