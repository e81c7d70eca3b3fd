"""The serving API end to end: httpx + ASGITransport + LifespanManager on a real secantusd-py."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import anyio
import httpx
import numpy as np
import pytest
from asgi_lifespan import LifespanManager

from recsys.settings import Settings
from serving.api.main import create_app
from serving.store import MongoServingStore
from serving.version_writer import write_payload_version
from tests.serving.payloads import GENERATED_AT, SIMILAR_N, TOP_N, make_payload

pytestmark = [pytest.mark.integration, pytest.mark.anyio]



@pytest.fixture
def settings(mongo_uri: str, db_name: str) -> Settings:
    return Settings(mongodb_uri=mongo_uri, mongodb_db=db_name, top_n=TOP_N, similar_n=SIMILAR_N,
                    active_poll_seconds=0.05, mongodb_timeout_ms=3000)


@pytest.fixture
def api(settings: Settings):
    @asynccontextmanager
    async def open_client(s: Settings = settings) -> AsyncIterator[httpx.AsyncClient]:
        app = create_app(s)
        async with LifespanManager(app) as manager:
            transport = httpx.ASGITransport(app=manager.app)
            async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
                yield client
    return open_client


@pytest.fixture
def published(store: MongoServingStore):
    payload = make_payload("v1")
    write_payload_version(store.db, payload)
    store.activate("v1")
    return payload


async def test_recommendations_for_known_user(api, published) -> None:
    async with api() as client:
        r = await client.get("/users/u3/recommendations", params={"k": 3})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["user_id"] == "u3" and body["model_version"] == "v1"
    assert body["source"] == "personalized"
    assert body["generated_at"].startswith(GENERATED_AT.isoformat()[:19])
    assert [it["item_id"] for it in body["items"]] == ["i3", "i4", "i5"]
    assert [it["rank"] for it in body["items"]] == [1, 2, 3]
    assert body["items"][0]["score"] == pytest.approx(1.0)


async def test_default_k_and_max_k(api, published) -> None:
    async with api() as client:
        default = (await client.get("/users/u0/recommendations")).json()
        top = (await client.get("/users/u0/recommendations", params={"k": TOP_N})).json()
    assert len(default["items"]) == min(10, TOP_N)
    assert len(top["items"]) == TOP_N


async def test_unknown_user_gets_popular(api, published) -> None:
    async with api() as client:
        r = await client.get("/users/nobody/recommendations", params={"k": 4})
    assert r.status_code == 200
    body = r.json()
    assert body["source"] == "popular" and body["model_version"] == "v1"
    assert [it["item_id"] for it in body["items"]] == ["i9", "i8", "i7", "i6"]


@pytest.mark.parametrize("k", ["0", "-1", str(TOP_N + 1), "abc"])
async def test_bad_k_is_422(api, published, k: str) -> None:
    async with api() as client:
        r = await client.get("/users/u0/recommendations", params={"k": k})
        s = await client.get("/items/i0/similar", params={"k": k})
    for resp in (r, s):
        assert resp.status_code == 422
        assert resp.headers["content-type"] == "application/json"
        assert resp.json()["detail"][0]["loc"] == ["query", "k"]


async def test_similar_items(api, published) -> None:
    async with api() as client:
        r = await client.get("/items/i0/similar", params={"k": 2})
        missing = await client.get("/items/zzz/similar")
    assert r.status_code == 200
    body = r.json()
    assert body["item_id"] == "i0" and body["source"] == "similar"
    assert [it["item_id"] for it in body["items"]] == ["i1", "i2"]
    assert missing.status_code == 404
    assert "zzz" in missing.json()["detail"]


async def test_embeddings_round_trip(api, published) -> None:
    async with api() as client:
        u = await client.get("/users/u7/embedding")
        i = await client.get("/items/i11/embedding")
        nu = await client.get("/users/nobody/embedding")
        ni = await client.get("/items/nothing/embedding")
    assert u.status_code == 200 and i.status_code == 200
    ub, ib = u.json(), i.json()
    assert ub["id"] == "u7" and ub["model_version"] == "v1" and ub["dim"] == 4
    assert np.array_equal(np.array(ub["vector"], dtype=np.float32), published.user_factors[7])
    assert np.array_equal(np.array(ib["vector"], dtype=np.float32), published.item_factors[11])
    assert nu.status_code == 404 and ni.status_code == 404
    assert "detail" in nu.json()


async def test_no_active_version_is_503(api, store: MongoServingStore) -> None:
    write_payload_version(store.db, make_payload("v1"))  # published but not active
    async with api() as client:
        for path in ["/users/u0/recommendations", "/items/i0/similar",
                     "/users/u0/embedding", "/items/i0/embedding", "/ready"]:
            r = await client.get(path)
            assert r.status_code == 503, path
            assert "Retry-After" in r.headers
            assert "active" in r.json()["detail"]
        assert (await client.get("/health")).json() == {"status": "ok"}


async def test_health_and_ready(api, published) -> None:
    async with api() as client:
        h = await client.get("/health")
        r = await client.get("/ready")
    assert h.status_code == 200 and h.json() == {"status": "ok"}
    assert r.status_code == 200
    assert r.json()["status"] == "ready" and r.json()["model_version"] == "v1"


async def test_ready_without_mongodb(api, settings: Settings) -> None:
    down = settings.model_copy(update={"mongodb_uri": "mongodb://127.0.0.1:1",
                                       "mongodb_timeout_ms": 200})
    async with api(down) as client:
        assert (await client.get("/health")).status_code == 200
        r = await client.get("/ready")
        assert r.status_code == 503 and "Retry-After" in r.headers
        rec = await client.get("/users/u0/recommendations")
        assert rec.status_code == 503


async def test_switch_is_served_within_a_second(api, store: MongoServingStore,
                                                published) -> None:
    write_payload_version(store.db, make_payload("v2", seed=9))
    async with api() as client:
        assert (await client.get("/users/u1/embedding")).json()["model_version"] == "v1"
        await anyio.to_thread.run_sync(store.activate, "v2")
        start = time.monotonic()
        while True:
            body = (await client.get("/users/u1/recommendations")).json()
            if body["model_version"] == "v2":
                break
            assert time.monotonic() - start < 1.0, "new version not served within 1 s"
            await anyio.sleep(0.02)
        emb = (await client.get("/users/u1/embedding")).json()
        assert emb["model_version"] == "v2"
        pop = (await client.get("/users/nobody/recommendations")).json()
        assert pop["model_version"] == "v2" and pop["source"] == "popular"


async def test_openapi_docs(api) -> None:
    async with api() as client:
        docs = await client.get("/docs")
        spec = (await client.get("/openapi.json")).json()
    assert docs.status_code == 200
    assert "/users/{user_id}/recommendations" in spec["paths"]
    assert "/items/{item_id}/similar" in spec["paths"]


async def test_mongodb_errors_are_503(settings: Settings, published) -> None:
    from pymongo import AsyncMongoClient

    app = create_app(settings)
    async with LifespanManager(app) as manager:
        dead = AsyncMongoClient("mongodb://127.0.0.1:1", serverSelectionTimeoutMS=200,
                                timeoutMS=200)
        app.state.services.db = dead[settings.mongodb_db]  # active state stays cached
        transport = httpx.ASGITransport(app=manager.app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            r = await client.get("/users/u0/recommendations")
        await dead.close()
    assert r.status_code == 503
    assert r.json() == {"detail": "MongoDB is unavailable"}
    assert "Retry-After" in r.headers
