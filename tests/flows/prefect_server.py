"""Helpers for the tests that run a real Prefect server: the CLI, health, deployments, upcoming runs."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import yaml
from prefect.client.orchestration import PrefectClient
from prefect.client.schemas.filters import (
    DeploymentFilter,
    DeploymentFilterId,
    FlowRunFilter,
    FlowRunFilterState,
    FlowRunFilterStateType,
)
from prefect.client.schemas.objects import Deployment, FlowRun, StateType

REPO = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
POOL = "recsys-local"


def prefect_cli(env: dict[str, str], *args: str, timeout: float = 120) -> str:
    """Run `prefect ARGS` from the repository root; fail the test with its output if it fails."""
    proc = subprocess.run([str(BIN / "prefect"), *args], cwd=REPO, env=env, capture_output=True,
                          text=True, timeout=timeout)
    assert proc.returncode == 0, f"prefect {' '.join(args)}:\n{proc.stdout}\n{proc.stderr}"
    return proc.stdout


def healthy(api_url: str) -> bool:
    """The server at `api_url` answers its health check."""
    try:
        return httpx.get(f"{api_url}/health", timeout=2).status_code == 200
    except httpx.TransportError:
        return False


def wait_healthy(api_url: str, timeout: float, gave_up: Callable[[], bool] = lambda: False) -> bool:
    """Poll the health check until it answers (True), `timeout` passes or `gave_up()` (False)."""
    deadline = time.monotonic() + timeout
    while not healthy(api_url):
        if gave_up() or time.monotonic() > deadline:
            return False
        time.sleep(0.5)
    return True


def declared_deployments() -> list[dict[str, Any]]:
    """The deployments of prefect.yaml as written."""
    return yaml.safe_load((REPO / "prefect.yaml").read_text())["deployments"]


def read_deployments(api_url: str) -> list[Deployment]:
    """Every deployment the server knows."""
    async def read() -> list[Deployment]:
        async with PrefectClient(api_url) as client:
            return await client.read_deployments()

    return asyncio.run(read())


def scheduled_runs(api_url: str) -> dict[str, list[FlowRun]]:
    """Deployment name -> its flow runs in state SCHEDULED (the "Upcoming" list of the UI)."""
    scheduled = FlowRunFilter(state=FlowRunFilterState(
        type=FlowRunFilterStateType(any_=[StateType.SCHEDULED])))

    async def read() -> dict[str, list[FlowRun]]:
        async with PrefectClient(api_url) as client:
            return {deployment.name: await client.read_flow_runs(
                        deployment_filter=DeploymentFilter(
                            id=DeploymentFilterId(any_=[deployment.id])),
                        flow_run_filter=scheduled)
                    for deployment in await client.read_deployments()}

    return asyncio.run(read())
