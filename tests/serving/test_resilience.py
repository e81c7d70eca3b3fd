"""MongoDB outages: a real server stopped and restarted, and `failCommand` fail points.

Each test runs its own `secantusd-py` (on-disk storage, fixed port) so it can break it freely.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path

import anyio
import httpx
import pytest
from asgi_lifespan import LifespanManager
from pymongo import MongoClient
from pymongo.errors import OperationFailure

from recsys.mongo_server import EmbeddedMongo, free_port
from recsys.settings import Settings
from recsys.versions import STATUS_BUILDING
from serving.api.main import create_app
from serving.store import MongoServingStore
from serving.version_writer import write_payload_version
from tests.serving.failpoints import set_failpoint
from tests.serving.payloads import SIMILAR_N, TOP_N, make_payload

pytestmark = [pytest.mark.integration, pytest.mark.anyio]

DB = "resilience"


def _settings(uri: str) -> Settings:
    return Settings(mongodb_uri=uri, mongodb_db=DB, top_n=TOP_N, similar_n=SIMILAR_N,
                    active_poll_seconds=0.1, mongodb_timeout_ms=1000, api_read_timeout_ms=500,
                    api_retry_after_seconds=1, api_rate_limit_per_second=0, api_log_json=False)


@asynccontextmanager
async def _client(settings: Settings) -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(settings)
    async with LifespanManager(app) as manager:
        transport = httpx.ASGITransport(app=manager.app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            yield client


def _publish_v1(uri: str) -> None:
    client: MongoClient = MongoClient(uri, serverSelectionTimeoutMS=5000, tz_aware=True)
    try:
        store = MongoServingStore(client[DB])
        write_payload_version(store.db, make_payload("v1"))
        store.activate("v1")
    finally:
        client.close()


async def _wait_for(client: httpx.AsyncClient, path: str, status: int, seconds: float) -> float:
    start = time.monotonic()
    while True:
        r = await client.get(path)
        if r.status_code == status:
            return time.monotonic() - start
        assert r.status_code < 500 or r.status_code == 503, r.text
        assert time.monotonic() - start < seconds, f"{path} not {status} within {seconds}s"
        await anyio.sleep(0.1)


@pytest.fixture
def server(tmp_path: Path) -> Iterator[EmbeddedMongo]:
    srv = EmbeddedMongo(state_dir=tmp_path / "state", port=free_port(),
                        storage_path=tmp_path / "db")
    srv.start()
    yield srv
    srv.stop()


async def test_stop_and_restart_real_server(server: EmbeddedMongo) -> None:
    _publish_v1(server.uri)
    async with _client(_settings(server.uri)) as client:
        warm = await client.get("/users/u1/recommendations")
        assert warm.status_code == 200
        await anyio.to_thread.run_sync(server.stop)

        cached = await client.get("/users/u1/recommendations")
        assert cached.status_code == 200 and cached.json() == warm.json()

        t0 = time.monotonic()
        first = await client.get("/users/u2/recommendations")
        first_s = time.monotonic() - t0
        assert first.status_code == 503 and first.headers["Retry-After"] == "1"
        assert first_s < 1.5  # bounded by api_read_timeout_ms, not the 1 s server timeout x N
        t0 = time.monotonic()
        again = await client.get("/items/i3/similar")
        assert again.status_code == 503 and time.monotonic() - t0 < 0.3  # fail fast
        assert (await client.get("/health")).status_code == 200

        await anyio.to_thread.run_sync(server.start)
        waited = await _wait_for(client, "/users/u2/recommendations", 200, 20)
        # the first reads after a restart may still pass the read deadline on a loaded machine:
        # a slow read is that caller's 503, so every route must recover, not answer at once
        assert await _wait_for(client, "/items/i3/similar", 200, 20) < 20
        metrics = (await client.get("/metrics")).text
    assert 'recsys_mongodb_errors_total{kind="unavailable"}' in metrics
    assert waited < 20


async def test_failpoints_close_and_block_connections(failpoint_server: str) -> None:
    uri = failpoint_server
    _publish_v1(uri)
    async with _client(_settings(uri)) as client:
        warm = await client.get("/users/u1/recommendations")
        assert warm.status_code == 200

        set_failpoint(uri, "alwaysOn", {"failCommands": ["find"], "closeConnection": True})
        assert (await client.get("/users/u1/recommendations")).json() == warm.json()
        dropped = await client.get("/users/u2/recommendations")
        assert dropped.status_code == 503 and "Retry-After" in dropped.headers
        set_failpoint(uri, "off")
        await _wait_for(client, "/users/u2/recommendations", 200, 10)

        set_failpoint(uri, "alwaysOn", {"failCommands": ["find"], "blockConnection": True,
                                     "blockTimeMS": 3000})
        t0 = time.monotonic()
        slow = await client.get("/users/u3/recommendations")
        assert slow.status_code == 503 and time.monotonic() - t0 < 2.0
        assert (await client.get("/users/u1/recommendations")).status_code == 200
        set_failpoint(uri, "off")
        await _wait_for(client, "/users/u3/recommendations", 200, 10)


def test_failpoint_during_publish_keeps_previous_version(failpoint_server: str) -> None:
    uri = failpoint_server
    _publish_v1(uri)
    client: MongoClient = MongoClient(uri, serverSelectionTimeoutMS=3000, tz_aware=True)
    try:
        store = MongoServingStore(client[DB])
        # let a few batches through, then fail an insert with a server error
        set_failpoint(uri, {"skip": 3}, {"failCommands": ["insert"], "errorCode": 2})
        with pytest.raises(OperationFailure):
            write_payload_version(store.db, make_payload("v2", seed=4), batch_size=4)
        set_failpoint(uri, "off")
        assert store.active_version() == "v1"
        assert store.get_version("v2")["status"] == STATUS_BUILDING
        assert store.cleanup_incomplete() == ["v2"]
        write_payload_version(store.db, make_payload("v2", seed=4), batch_size=4)
        assert store.activate("v2") == "v1"
    finally:
        client.close()
