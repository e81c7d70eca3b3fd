"""prefect.yaml against a real Prefect server: deploy everything, check schedules, run one via a worker.

Starts `prefect server start` (temporary PREFECT_HOME, free port), creates the process work pool,
runs `prefect deploy --all` from the repository root, reads every deployment back through the
client, then runs the `maintenance` deployment through `prefect worker start --run-once` against
a published serving database, to completion.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from prefect.client.orchestration import PrefectClient
from pymongo import MongoClient

from recsys.mongo_server import free_port
from serving.store import MongoServingStore
from serving.version_writer import write_payload_version
from tests.flows.prefect_server import (
    BIN,
    POOL,
    REPO,
    declared_deployments,
    prefect_cli,
    read_deployments,
    wait_healthy,
)
from tests.serving.payloads import make_payload

# About 2 minutes on the shared 2-core machine (server start + deploy dominate): run with -m slow.
# tests/flows/test_schedules.py covers `make prefect-up` and the scheduler in the default suite.
pytestmark = [pytest.mark.integration, pytest.mark.slow]

EXPECTED_SCHEDULES = {  # deployment -> (cron, slug); every one in Europe/Berlin, active
    "daily-incremental": ("0 2 * * *", "daily-incremental-0200"),
    "weekly-retrain": ("0 4 * * 0", "weekly-retrain-sun-0400"),
    "maintenance": ("30 5 * * *", "maintenance-0530"),
    "backfill": None,
}


@pytest.fixture(scope="module")
def prefect_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    home = tmp_path_factory.mktemp("prefect-home")
    port = free_port()
    env = {**os.environ, "PREFECT_HOME": str(home),
           "PREFECT_API_URL": f"http://127.0.0.1:{port}/api",
           "PREFECT_SERVER_ANALYTICS_ENABLED": "false", "PREFECT_UI_ENABLED": "false",
           "PREFECT_LOGGING_LEVEL": "WARNING", "RECSYS_PROJECT_DIR": str(REPO)}
    log = (home / "server.log").open("w")
    server = subprocess.Popen([str(BIN / "prefect"), "server", "start", "--host", "127.0.0.1",
                               "--port", str(port)], env=env, stdout=log,
                              stderr=subprocess.STDOUT, start_new_session=True)
    try:
        if not wait_healthy(env["PREFECT_API_URL"], 120, lambda: server.poll() is not None):
            pytest.fail("Prefect server did not start:\n" + (home / "server.log").read_text())
        yield env
    finally:
        server.terminate()
        try:
            server.wait(20)
        except subprocess.TimeoutExpired:
            server.kill()
        log.close()


@pytest.fixture(scope="module")
def deployed(prefect_server: dict[str, str]) -> dict[str, str]:
    prefect_cli(prefect_server, "work-pool", "create", POOL, "--type", "process")
    prefect_cli(prefect_server, "--no-prompt", "deploy", "--all", timeout=300)
    return prefect_server


def test_every_deployment_with_its_schedule(deployed: dict[str, str]) -> None:
    declared = declared_deployments()
    deployments = {d.name: d for d in read_deployments(deployed["PREFECT_API_URL"])}
    assert set(deployments) == {d["name"] for d in declared} == set(EXPECTED_SCHEDULES)
    for spec in declared:
        deployment = deployments[spec["name"]]
        assert deployment.entrypoint == spec["entrypoint"]
        assert deployment.entrypoint.startswith("flows/")
        assert deployment.work_pool_name == POOL
        assert set(deployment.tags) == {"recsys", "batch"}
        assert deployment.pull_steps == [{"prefect.deployments.steps.set_working_directory": {
            "directory": str(REPO)}}]  # $RECSYS_PROJECT_DIR at deploy time
        assert deployment.global_concurrency_limit is not None
        assert deployment.global_concurrency_limit.limit == 1
        expected = EXPECTED_SCHEDULES[spec["name"]]
        if expected is None:
            assert deployment.schedules == []
            continue
        (schedule,) = deployment.schedules
        assert (schedule.schedule.cron, schedule.slug) == expected
        assert schedule.schedule.timezone == "Europe/Berlin"
        assert schedule.active is True
    assert deployments["weekly-retrain"].parameters == {"search": True, "publish": True}


def test_redeploy_keeps_one_schedule_each(deployed: dict[str, str]) -> None:
    prefect_cli(deployed, "--no-prompt", "deploy", "--all", timeout=300)
    for deployment in read_deployments(deployed["PREFECT_API_URL"]):
        assert len(deployment.schedules) == (0 if deployment.name == "backfill" else 1)


def test_maintenance_runs_through_a_worker(deployed: dict[str, str], mongo_uri: str,
                                           mongo_db_name: str, tmp_path: Path) -> None:
    with MongoClient(mongo_uri) as client:
        store = MongoServingStore(client[mongo_db_name])
        write_payload_version(store.db, make_payload("v1"))
        store.activate("v1")
    env = {**deployed, "MONGODB_URI": mongo_uri, "MONGODB_DB": mongo_db_name,
           "RECSYS_DATA_DIR": str(tmp_path / "data")}
    out = prefect_cli(env, "deployment", "run", "maintenance/maintenance", "-p", "keep_models=2")
    run_id = next(line.split()[-1] for line in out.splitlines() if "UUID" in line)
    prefect_cli(env, "worker", "start", "--pool", POOL, "--run-once", "--type", "process",
             timeout=300)

    async def final_state():
        async with PrefectClient(env["PREFECT_API_URL"]) as client:
            run = await client.read_flow_run(run_id)
            return run.state

    state = asyncio.run(final_state())
    assert state.is_completed(), state.message
    backups = list((tmp_path / "data" / "backups").iterdir())
    assert len(backups) == 1 and (backups[0] / "backup.json").is_file()
    with MongoClient(mongo_uri) as client:
        client.drop_database(mongo_db_name)
