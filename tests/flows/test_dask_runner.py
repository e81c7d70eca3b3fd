"""The partitioned stages on Dask (issue 15): the same batch through the local runner and through
a LocalCluster of 2 worker processes gives the same snapshot, model and top-N; a worker killed
during scoring is rerun by Dask and the run still publishes a complete, verified version; an
unreachable cluster fails before anything is written.

One local and one Dask pipeline run (module fixture) serve the comparison and the kill test: the
Dask run's first user part of scoring kills its worker process the first time it runs.
"""

from __future__ import annotations

import os
import pickle
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from distributed import Client
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId
from pymongo import MongoClient

from features.snapshot import load_manifest
from flows.runner import FlowRunner, open_runner, planned_runner
from recsys.datagen import generate_batch
from recsys.errors import DaskClusterError, InputFileError, ValidationFailed
from recsys.mongo import recs_collection
from recsys.mongo_server import free_port
from recsys.partitions import serial_map
from recsys.settings import Settings
from training.scores import load_scores
from training.scoring import score_part

KILL_MARKER_ENV = "DASK_RUNNER_TEST_KILL_MARKER"  # not RECSYS_*: unknown settings are refused
USERS = 150


def score_part_killing_its_worker_once(model_dir: str, part: int, *args: Any) -> Any:
    """`training.scoring.score_part`, except that user part 0 kills its Dask worker process the
    first time it runs (the marker file records the pid; Dask must rerun the part)."""
    from distributed import get_worker

    get_worker()  # raises outside a Dask worker: never os._exit() the test process
    marker = Path(os.environ[KILL_MARKER_ENV])
    if part == 0:
        try:
            with marker.open("x") as out:
                out.write(str(os.getpid()))
        except FileExistsError:
            pass
        else:
            os._exit(1)
    return score_part(model_dir, part, *args)


def _run_pipeline(root: Path, batch_dir: Path, mongo_uri: str, runner: str,
                  monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    env = {"MONGODB_URI": mongo_uri, "MONGODB_DB": f"test_{uuid.uuid4().hex[:12]}",
           "RECSYS_DATA_DIR": str(root / runner / "data"), "RECSYS_TOP_N": "10",
           "RECSYS_ITERATIONS": "4", "RECSYS_VALIDATION_DATA_DOCS": "false",
           "RECSYS_TASK_RUNNER": runner, "RECSYS_DASK_WORKERS": "2"}
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    from flows.pipeline import batch_pipeline

    state = batch_pipeline(str(batch_dir), run_id=f"{runner}-1", return_state=True)
    assert state.is_completed(), state.message
    return {"env": env, "settings": Settings(), "result": state.result(),
            "flow_run_id": state.state_details.flow_run_id}


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory, mongo_uri: str,
         prefect_harness: None) -> Iterator[dict[str, Any]]:
    root = tmp_path_factory.mktemp("dask-runner")
    batch = generate_batch(root / "batch", users=USERS, items=60, interactions=3000, seed=11)
    with pytest.MonkeyPatch.context() as mp:
        local = _run_pipeline(root, batch.directory, mongo_uri, "local", mp)
        mp.setenv(KILL_MARKER_ENV, str(root / "killed-worker.pid"))
        mp.setattr("training.stage.score_part", score_part_killing_its_worker_once)
        dask = _run_pipeline(root, batch.directory, mongo_uri, "dask", mp)
    yield {"local": local, "dask": dask, "marker": root / "killed-worker.pid"}


def _served(run: dict[str, Any]) -> dict[str, list[dict[str, Any]]]:
    env = run["env"]
    with MongoClient(env["MONGODB_URI"]) as client:
        coll = client[env["MONGODB_DB"]][recs_collection(run["result"].version)]
        return {doc["_id"]: doc["items"] for doc in coll.find()}


def _view(run: dict[str, Any], name: str) -> pd.DataFrame:
    settings: Settings = run["settings"]
    manifest = load_manifest(settings.features_dir, run["result"].version)
    frame = pd.read_parquet(manifest.view_path(name))
    # row order follows the parts; the entity ids are the key of every view
    return frame.sort_values([c for c in ("user_id", "item_id") if c in frame]
                             ).reset_index(drop=True)


@pytest.mark.integration
def test_local_and_dask_give_the_same_snapshot_model_and_top_n(runs: dict[str, Any]) -> None:
    local, dask = runs["local"], runs["dask"]
    assert local["result"].runner.startswith("local runner")
    assert dask["result"].runner.startswith("dask runner on a LocalCluster")
    assert "(2 worker(s)" in dask["result"].runner and "4 partition(s)" in dask["result"].runner

    # the feature snapshot: the same views, the same rows and exactly the same values (the
    # files are not byte-identical: rows are in part order)
    local_manifest = load_manifest(local["settings"].features_dir, "local-1")
    dask_manifest = load_manifest(dask["settings"].features_dir, "dask-1")
    assert set(local_manifest.views) == set(dask_manifest.views)
    assert dask_manifest.partitions == 4 and local_manifest.partitions == 1
    for name in local_manifest.views:
        pd.testing.assert_frame_equal(_view(local, name), _view(dask, name), check_exact=True)

    # the model: the fit runs in the flow's process on the same snapshot, so the factors are
    # bit-for-bit equal
    local_model = np.load(Path(local["result"].model_dir) / "model.npz")
    dask_model = np.load(Path(dask["result"].model_dir) / "model.npz")
    assert set(local_model.files) == set(dask_model.files)
    for key in local_model.files:
        np.testing.assert_array_equal(local_model[key], dask_model[key], err_msg=key)

    # top-N for every user: the same items in the same order, as scored and as served; the
    # scores agree to float32 rounding (a worker's BLAS runs one thread, the flow's several)
    local_scores = load_scores(Path(local["result"].model_dir))
    dask_scores = load_scores(Path(dask["result"].model_dir))
    for key in ("rec_items", "rec_explain_items", "similar_items", "popular_items"):
        np.testing.assert_array_equal(local_scores[key], dask_scores[key], err_msg=key)
    np.testing.assert_allclose(local_scores["rec_scores"], dask_scores["rec_scores"],
                               rtol=1e-6, atol=1e-6)
    local_served, dask_served = _served(local), _served(dask)
    assert len(local_served) == USERS and local_served.keys() == dask_served.keys()
    for user, items in local_served.items():
        assert ([i["item_id"] for i in items] == [i["item_id"] for i in dask_served[user]]), user


@pytest.mark.integration
def test_a_worker_killed_during_scoring_is_rerun_and_the_version_is_published(
        runs: dict[str, Any]) -> None:
    dask = runs["dask"]
    killed_pid = int(runs["marker"].read_text())
    assert killed_pid != os.getpid()  # a worker process died, not the flow
    result = dask["result"]
    assert result.published and result.version == "dask-1"

    env = dask["env"]
    with MongoClient(env["MONGODB_URI"]) as client:
        db = client[env["MONGODB_DB"]]
        assert db["serving_state"].find_one({"_id": "active"})["version"] == "dask-1"
        assert db["model_versions"].find_one({"_id": "dask-1"})["status"] == "ready"
    served = _served(dask)
    assert len(served) == USERS and all(len(items) == 10 for items in served.values())

    # every part of scoring ended Completed in Prefect, the killed one included
    with get_client(sync_client=True) as client:
        tasks = client.read_task_runs(flow_run_filter=FlowRunFilter(
            id=FlowRunFilterId(any_=[dask["flow_run_id"]])))
    parts = {t.name: t.state.type.value for t in tasks if t.name.startswith("score part ")}
    assert set(parts) == {f"score part {n}/5" for n in range(1, 6)}  # 4 user parts + items
    assert set(parts.values()) == {"COMPLETED"}


@pytest.mark.integration
def test_an_unreachable_cluster_fails_in_one_line_before_anything_is_written(
        tmp_path: Path, mongo_uri: str, mongo_db_name: str, prefect_harness: None) -> None:
    from prefect.settings import PREFECT_API_URL

    address = f"tcp://127.0.0.1:{free_port()}"  # nothing listens there
    batch = generate_batch(tmp_path / "batch", users=20, items=10, interactions=200, seed=2)
    data_dir = tmp_path / "data"
    env = {**os.environ, "MONGODB_URI": mongo_uri, "MONGODB_DB": mongo_db_name,
           "RECSYS_DATA_DIR": str(data_dir), "RECSYS_TASK_RUNNER": "dask",
           "RECSYS_DASK_ADDRESS": address, "RECSYS_DASK_CONNECT_TIMEOUT_S": "2",
           "PREFECT_API_URL": PREFECT_API_URL.value()}
    proc = subprocess.run([sys.executable, "-m", "recsys", "pipeline", "--input",
                           str(batch.directory)], env=env, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert f"runner: dask runner on the Dask cluster at {address}" in proc.stdout
    (error,) = [line for line in proc.stderr.splitlines() if line.startswith("error: ")]
    assert (f"the Dask cluster at {address} (RECSYS_DASK_ADDRESS) cannot be reached"
            in error), proc.stderr
    assert "Traceback" not in proc.stderr
    written = sorted(p.name for p in data_dir.iterdir()) if data_dir.exists() else []
    assert not {"store", "features", "models", "validation", "quarantine"} & set(written)
    with MongoClient(mongo_uri) as client:
        assert client[mongo_db_name].list_collection_names() == []


def test_the_local_runner_runs_parts_in_this_process(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path, task_runner="local")
    assert planned_runner(settings) == ("local runner (every stage in the flow's process, "
                                        "1 partition(s))")
    with open_runner(settings) as runner:
        assert isinstance(runner, FlowRunner) and runner.kind == "local"
        assert runner.mapper is serial_map
        assert runner.mapper("square", pow, [(2, 2), (3, 2)]) == [4, 9]
    planned = planned_runner(Settings(data_dir=tmp_path, task_runner="dask", dask_workers=3))
    assert planned == ("dask runner on a LocalCluster of 3 worker processes started for the "
                       "run, 6 partition(s)")


def test_project_errors_cross_process_boundaries_intact() -> None:
    """A part's error comes back from a Dask worker pickled: same type, message, attributes."""
    error = pickle.loads(pickle.dumps(InputFileError("a.csv", "bad value", column="rating")))
    assert type(error) is InputFileError and error.column == "rating"
    assert str(error) == "a.csv, column 'rating': bad value"
    failed = pickle.loads(pickle.dumps(ValidationFailed([{"file": "f", "expectation": "x"}])))
    assert failed.failures == [{"file": "f", "expectation": "x"}]


@pytest.mark.integration
def test_a_cluster_without_workers_fails_in_one_line(tmp_path: Path) -> None:
    """Parts sent to a scheduler that has no worker would wait forever: refuse it up front."""
    port = free_port()
    scheduler = subprocess.Popen([sys.executable, "-m", "distributed.cli.dask_scheduler",
                                  "--port", str(port), "--dashboard-address", ":0"],
                                 stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 120
        while True:  # the scheduler is up once a client can connect
            try:
                Client(f"tcp://127.0.0.1:{port}", timeout="2s").close()
                break
            except OSError:
                assert time.monotonic() < deadline, "dask scheduler did not start"
        settings = Settings(data_dir=tmp_path, task_runner="dask",
                            dask_address=f"tcp://127.0.0.1:{port}", dask_connect_timeout_s=1)
        with pytest.raises(DaskClusterError, match=r"has no worker \(waited 1 s\)"):
            with open_runner(settings):
                pass
    finally:
        scheduler.terminate()
        scheduler.wait(30)
