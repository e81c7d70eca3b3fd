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
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import yaml
from pymongo import MongoClient

from recsys.mongo_server import free_port
from serving.store import MongoServingStore
from tests.serving.payloads import make_payload

# About 2 minutes on the shared 2-core machine (server start + deploy dominate): run with -m slow.
pytestmark = [pytest.mark.integration, pytest.mark.slow]

REPO = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
POOL = "recsys-local"
EXPECTED_SCHEDULES = {  # deployment -> (cron, slug); every one in Europe/Berlin, active
    "daily-incremental": ("0 2 * * *", "daily-incremental-0200"),
    "weekly-retrain": ("0 4 * * 0", "weekly-retrain-sun-0400"),
    "maintenance": ("30 5 * * *", "maintenance-0530"),
    "backfill": None,
}


def _prefect(env: dict[str, str], *args: str, timeout: float = 120) -> str:
    proc = subprocess.run([str(BIN / "prefect"), *args], cwd=REPO, env=env, capture_output=True,
                          text=True, timeout=timeout)
    assert proc.returncode == 0, f"prefect {' '.join(args)}:\n{proc.stdout}\n{proc.stderr}"
    return proc.stdout


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
        deadline = time.monotonic() + 120
        while True:
            try:
                if httpx.get(f"{env['PREFECT_API_URL']}/health", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if server.poll() is not None or time.monotonic() > deadline:
                pytest.fail("Prefect server did not start:\n" + (home / "server.log").read_text())
            time.sleep(0.5)
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
    _prefect(prefect_server, "work-pool", "create", POOL, "--type", "process")
    _prefect(prefect_server, "--no-prompt", "deploy", "--all", timeout=300)
    return prefect_server


async def _read_deployments(env: dict[str, str]) -> list:
    from prefect.client.orchestration import PrefectClient

    async with PrefectClient(env["PREFECT_API_URL"]) as client:
        return await client.read_deployments()


def test_every_deployment_with_its_schedule(deployed: dict[str, str]) -> None:
    declared = yaml.safe_load((REPO / "prefect.yaml").read_text())["deployments"]
    deployments = {d.name: d for d in asyncio.run(_read_deployments(deployed))}
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
    _prefect(deployed, "--no-prompt", "deploy", "--all", timeout=300)
    for deployment in asyncio.run(_read_deployments(deployed)):
        assert len(deployment.schedules) == (0 if deployment.name == "backfill" else 1)


def test_maintenance_runs_through_a_worker(deployed: dict[str, str], mongo_uri: str,
                                           mongo_db_name: str, tmp_path: Path) -> None:
    with MongoClient(mongo_uri) as client:
        store = MongoServingStore(client[mongo_db_name])
        store.publish(make_payload("v1"))
        store.activate("v1")
    env = {**deployed, "MONGODB_URI": mongo_uri, "MONGODB_DB": mongo_db_name,
           "RECSYS_DATA_DIR": str(tmp_path / "data")}
    out = _prefect(env, "deployment", "run", "maintenance/maintenance", "-p", "keep_models=2")
    run_id = next(line.split()[-1] for line in out.splitlines() if "UUID" in line)
    _prefect(env, "worker", "start", "--pool", POOL, "--run-once", "--type", "process",
             timeout=300)

    async def final_state():
        from prefect.client.orchestration import PrefectClient

        async with PrefectClient(env["PREFECT_API_URL"]) as client:
            run = await client.read_flow_run(run_id)
            return run.state

    state = asyncio.run(final_state())
    assert state.is_completed(), state.message
    backups = list((tmp_path / "data" / "backups").iterdir())
    assert len(backups) == 1 and (backups[0] / "backup.json").is_file()
    with MongoClient(mongo_uri) as client:
        client.drop_database(mongo_db_name)
