"""Regression (issue 13): a slow query is not an outage.

Before the fix, a legal batch of 600-1,000 ids took longer than the read deadline on the embedded
server and came back 503, and the timeout opened the circuit breaker: every other caller got a
fail-fast 503 for `RECSYS_API_RETRY_AFTER_SECONDS` while `/ready` said 200. Now only
connection-level errors open the breaker, a timed-out read is a 503 for its caller only, and a
big batch is read in chunks that each fit the deadline.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import anyio
import httpx
import pytest
from asgi_lifespan import LifespanManager
from pymongo import MongoClient
from pymongo.errors import (
    AutoReconnect,
    ExecutionTimeout,
    NetworkTimeout,
    OperationFailure,
    ServerSelectionTimeoutError,
    WaitQueueTimeoutError,
)

from recsys.errors import ServiceUnavailable
from recsys.settings import Settings
from serving.api.cache import MongoGuard, is_outage, is_timeout
from serving.api.main import create_app
from serving.api.metrics import ApiMetrics
from serving.store import MongoServingStore
from serving.version_writer import write_payload_version
from tests.serving.failpoints import set_failpoint
from tests.serving.payloads import make_payload

pytestmark = [pytest.mark.integration, pytest.mark.anyio]

BIG_USERS, BIG_TOP_N = 1000, 50


@asynccontextmanager
async def _client(settings: Settings) -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(settings)
    async with LifespanManager(app) as manager:
        transport = httpx.ASGITransport(app=manager.app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            yield client


async def test_a_slow_query_fails_only_its_caller(failpoint_server: str) -> None:
    uri = failpoint_server
    with MongoClient(uri, tz_aware=True) as mongo:
        store = MongoServingStore(mongo["slow"])
        write_payload_version(store.db, make_payload("v1"))
        store.activate("v1")
    # a long poll interval: the fail point below is for the request's read, not the poller's
    settings = Settings(mongodb_uri=uri, mongodb_db="slow", top_n=5, similar_n=5,
                        active_poll_seconds=30, api_read_timeout_ms=400,
                        api_retry_after_seconds=5, api_rate_limit_per_second=0,
                        api_log_json=False)
    async with _client(settings) as client:
        assert (await client.get("/users/u1/recommendations")).status_code == 200
        set_failpoint(uri, {"times": 1}, {"failCommands": ["find"], "blockConnection": True,
                                          "blockTimeMS": 1500})
        t0 = time.monotonic()
        slow = await client.get("/users/u2/recommendations")
        assert slow.status_code == 503 and time.monotonic() - t0 < 1.2, slow.text
        assert "Retry-After" in slow.headers and "400 ms" in slow.json()["detail"]

        others = [await client.get(f"/users/u{i}/recommendations") for i in (3, 4)]
        assert [r.status_code for r in others] == [200, 200]  # the breaker stayed closed
        assert (await client.get("/ready")).status_code == 200
        metrics = (await client.get("/metrics")).text
    assert 'recsys_mongodb_errors_total{kind="timeout"} 1.0' in metrics
    assert 'kind="fail_fast"} 1' not in metrics


@pytest.mark.parametrize(("error", "outage", "timeout"), [
    (ServerSelectionTimeoutError("no server"), True, False),
    (AutoReconnect("connection reset by peer"), True, False),
    (NetworkTimeout("timed out"), False, True),
    (ExecutionTimeout("operation exceeded time limit", 50), False, True),
    (WaitQueueTimeoutError("pool busy"), False, True),
    (OperationFailure("bad query", 2), False, False),
])
def test_only_connection_errors_count_as_outages(error: Exception, outage: bool,
                                                 timeout: bool) -> None:
    # a real outage (server stopped) is covered end to end in test_resilience.py
    assert (is_outage(error), is_timeout(error)) == (outage, timeout)
    guard = MongoGuard(ApiMetrics(), timeout_s=0.1, retry_after=5)

    async def failing_read() -> None:
        async with guard.read():
            raise error

    with pytest.raises((ServiceUnavailable, OperationFailure)):
        anyio.run(failing_read)
    assert guard.is_open is outage


@pytest.fixture
def big(mongo_uri: str, db_name: str, store: MongoServingStore) -> Settings:
    write_payload_version(store.db, make_payload("v1", n_users=BIG_USERS, n_items=300,
                                                 top_n=BIG_TOP_N, attributes=True, explain=True),
                          batch_size=250)
    store.activate("v1")
    # the default read deadline (1.5 s) and batch limit (1,000 ids)
    return Settings(mongodb_uri=mongo_uri, mongodb_db=db_name, top_n=BIG_TOP_N,
                    api_rate_limit_per_second=0, api_log_json=False)


async def test_a_full_batch_is_answered_within_the_deadline(big: Settings) -> None:
    assert big.api_batch_max_users == BIG_USERS and big.api_read_timeout_ms == 1500
    ids = [f"u{i}" for i in range(BIG_USERS)]
    async with _client(big) as client:
        r = await client.post("/recommendations/batch", json={"user_ids": ids, "k": 3})
        other = await client.get("/users/nobody/recommendations")
        ready = await client.get("/ready")
    assert r.status_code == 200, r.text
    results = r.json()["results"]
    assert [x["user_id"] for x in results] == ids
    assert {x["source"] for x in results} == {"personalized"}
    assert other.status_code == 200 and ready.status_code == 200
