"""MongoDB stopped and started while concurrent clients keep calling the API.

tests/serving/test_resilience.py checks the outage request by request (503 + Retry-After, the
fail-fast breaker, recovery); this adds load: many callers at once must only ever see 200 or
503 with Retry-After, never another error, and every one of them recovers after the restart.
"""

from __future__ import annotations

import random
import time
from collections.abc import Iterator
from pathlib import Path

import anyio
import httpx
import pytest
from asgi_lifespan import LifespanManager

from recsys.mongo_server import EmbeddedMongo, free_port
from recsys.settings import Settings
from serving.api.main import create_app
from tests.faults.conftest import BASELINE, serve_baseline
from tests.serving.payloads import N_ITEMS, N_USERS, SIMILAR_N, TOP_N

pytestmark = [pytest.mark.faults, pytest.mark.integration, pytest.mark.anyio]

DB = "outage"
CALLERS = 8
OUTAGE_S = 3.0
RECOVERY_S = 30.0


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
def server(tmp_path: Path) -> Iterator[EmbeddedMongo]:
    """A MongoDB of this test's own (it is stopped and started; the session's one is not)."""
    srv = EmbeddedMongo(state_dir=tmp_path / "state", port=free_port(),
                        storage_path=tmp_path / "db")
    srv.start()
    yield srv
    srv.stop()


def _path(rng: random.Random) -> str:
    # known users, unknown users (popular fallback) and similar items: every read path
    kind = rng.randrange(3)
    if kind == 0:
        return f"/users/u{rng.randrange(N_USERS)}/recommendations"
    if kind == 1:
        return f"/users/stranger{rng.randrange(10_000)}/recommendations"
    return f"/items/i{rng.randrange(N_ITEMS)}/similar"


async def test_callers_see_only_200_or_503_with_retry_after_and_all_recover(
    server: EmbeddedMongo
) -> None:
    serve_baseline(server.uri, DB)
    settings = Settings(mongodb_uri=server.uri, mongodb_db=DB, top_n=TOP_N, similar_n=SIMILAR_N,
                        active_poll_seconds=0.1, mongodb_timeout_ms=1000,
                        api_read_timeout_ms=500, api_retry_after_seconds=1,
                        api_rate_limit_per_second=0, api_log_json=False)
    seen: list[tuple[str, float, int, str | None]] = []  # (phase, time, status, Retry-After)
    phase = "before"
    recovered: set[int] = set()

    async def caller(n: int, client: httpx.AsyncClient) -> None:
        rng = random.Random(n)
        while phase != "done":
            response = await client.get(_path(rng))
            seen.append((phase, time.monotonic(), response.status_code,
                         response.headers.get("Retry-After")))
            if phase == "after" and response.status_code == 200:
                recovered.add(n)
            await anyio.sleep(0.01)

    app = create_app(settings)
    async with LifespanManager(app) as manager, httpx.AsyncClient(
            transport=httpx.ASGITransport(app=manager.app), base_url="http://test") as client:
        async with anyio.create_task_group() as callers:
            for n in range(CALLERS):
                callers.start_soon(caller, n, client)
            await anyio.sleep(1.0)
            phase = "outage"
            await anyio.to_thread.run_sync(server.stop)
            await anyio.sleep(OUTAGE_S)
            assert (await client.get("/health")).status_code == 200  # alive, only not ready
            assert (await client.get("/ready")).status_code == 503
            await anyio.to_thread.run_sync(server.start)
            phase = "after"
            restarted = time.monotonic()
            while len(recovered) < CALLERS and time.monotonic() - restarted < RECOVERY_S:
                await anyio.sleep(0.1)
            recovered_in = time.monotonic() - restarted
            phase = "done"
        assert (await client.get("/ready")).status_code == 200
        active = (await client.get("/users/u1/recommendations")).json()["model_version"]

    statuses = {status for _, _, status, _ in seen}
    assert statuses <= {200, 503}, statuses
    assert all(after for _, _, status, after in seen if status == 503), "503 without Retry-After"
    assert {status for p, _, status, _ in seen if p == "before"} == {200}
    assert 503 in {status for p, _, status, _ in seen if p == "outage"}
    assert len(recovered) == CALLERS, f"{CALLERS - len(recovered)} callers never recovered"
    assert recovered_in < RECOVERY_S and active == BASELINE
