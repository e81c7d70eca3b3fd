"""Read coalescing (issue 14): concurrent reads by `_id` share `$in` reads, on a real server."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Annotated

import pytest
from fastapi import Query, Request, Response
from pymongo import AsyncMongoClient
from pymongo.asynchronous.collection import AsyncCollection
from pymongo.monitoring import CommandListener, CommandStartedEvent

from recsys.errors import ServiceUnavailable
from serving.api.cache import MongoGuard
from serving.api.coalesce import ReadCoalescer
from serving.api.lean_route import LeanRoute
from serving.api.metrics import ApiMetrics
from serving.api.models import RecQuery

pytestmark = [pytest.mark.integration, pytest.mark.anyio]


class _Finds(CommandListener):
    def __init__(self) -> None:
        self.filters: list[dict] = []

    def started(self, event: CommandStartedEvent) -> None:
        if event.command_name == "find":
            self.filters.append(event.command["filter"])

    def succeeded(self, event: object) -> None:
        pass

    def failed(self, event: object) -> None:
        pass


@pytest.fixture
async def collection(mongo_uri: str, db_name: str) -> AsyncIterator[tuple[AsyncCollection,
                                                                           _Finds]]:
    finds = _Finds()
    client = AsyncMongoClient(mongo_uri, event_listeners=[finds])
    coll = client[db_name]["docs"]
    await coll.insert_many([{"_id": f"u{i}", "n": i} for i in range(20)])
    finds.filters.clear()
    yield coll, finds
    await client.drop_database(db_name)
    await client.close()


def _guard() -> MongoGuard:
    return MongoGuard(ApiMetrics(), timeout_s=5, retry_after=2)


async def test_a_lone_read_is_one_find_by_id(collection) -> None:
    coll, finds = collection
    reads = ReadCoalescer(_guard())
    assert await reads.find(coll, "u3") == {"_id": "u3", "n": 3}
    assert await reads.find(coll, "nobody") is None
    assert finds.filters == [{"_id": "u3"}, {"_id": "nobody"}]


async def test_concurrent_reads_share_in_reads(collection) -> None:
    coll, finds = collection
    reads = ReadCoalescer(_guard(), max_in_flight=1, max_ids=5)
    keys = ["u1", "u2", "u2", "u3", "nobody", "u4", "u5", "u6", "u7"]
    docs = await asyncio.gather(*(reads.find(coll, k) for k in keys))
    assert [d and d["n"] for d in docs] == [1, 2, 2, 3, None, 4, 5, 6, 7]
    # the first read starts alone; the ones queued meanwhile go together, 5 distinct ids a read
    assert finds.filters[0] == {"_id": "u1"}
    batched = [f["_id"]["$in"] for f in finds.filters[1:]]
    assert batched == [["u2", "u3", "nobody", "u4", "u5"], ["u6", "u7"]]


async def test_an_outage_fails_every_waiting_caller(mongo_uri: str) -> None:
    dead = AsyncMongoClient("mongodb://127.0.0.1:1", serverSelectionTimeoutMS=200, timeoutMS=200)
    guard = _guard()
    reads = ReadCoalescer(guard, max_in_flight=1)
    coll = dead["x"]["docs"]
    results = await asyncio.gather(*(reads.find(coll, f"u{i}") for i in range(4)),
                                   return_exceptions=True)
    await dead.close()
    assert all(isinstance(r, ServiceUnavailable) for r in results), results
    assert guard.is_open


def test_lean_route_refuses_parameters_it_cannot_solve() -> None:
    async def endpoint(request: Request, user_id: str, query: Annotated[RecQuery, Query()],
                       extra: int = 0) -> Response:
        return Response()

    with pytest.raises(TypeError, match="extra"):
        LeanRoute("/users/{user_id}/x", endpoint, methods=["GET"])
