"""`GET /items`, `GET /items/{id}`, `/stats/overview` and `/stats/categories` on a real
secantusd-py, over a real feature snapshot materialized online (tests/serving/catalogue_data.py)."""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import httpx
import numpy as np
import pytest
from asgi_lifespan import LifespanManager

from recsys.mongo import FEATURE_SNAPSHOTS
from recsys.settings import Settings
from serving.api.aggregates import VersionCache
from serving.api.main import create_app
from serving.rec_stats import recommendation_stats
from serving.store import MongoServingStore
from serving.version_writer import write_payload_version
from tests.serving.catalogue_data import (
    EVENTS_PER_ITEM,
    N_ITEMS,
    N_USERS,
    SNAPSHOT,
    TOP,
    publish_catalogue,
    v2_list,
)
from tests.serving.payloads import item_genres, make_payload

pytestmark = [pytest.mark.integration, pytest.mark.anyio]

KEY = "catalogue-key"
ENDPOINTS = ("/items", "/items/i1", "/stats/overview", "/stats/categories")


@pytest.fixture
def settings(mongo_uri: str, db_name: str, tmp_path: Path) -> Settings:
    return Settings(mongodb_uri=mongo_uri, mongodb_db=db_name, data_dir=tmp_path, top_n=TOP,
                    similar_n=5, api_keys=KEY, api_log_json=False, mongodb_timeout_ms=3000)


@pytest.fixture
def api(settings: Settings):
    @asynccontextmanager
    async def open_client(key: str | None = KEY) -> AsyncIterator[httpx.AsyncClient]:
        app = create_app(settings)
        async with LifespanManager(app) as manager:
            headers = {"X-API-Key": key} if key else {}
            async with httpx.AsyncClient(transport=httpx.ASGITransport(app=manager.app),
                                         base_url="http://test", headers=headers) as client:
                client.app = app  # type: ignore[attr-defined]
                yield client
    return open_client


@pytest.fixture
def catalogue(db, store: MongoServingStore, tmp_path: Path):
    return publish_catalogue(db, store, tmp_path)


def ids(body: dict) -> list[str]:
    return [it["item_id"] for it in body["items"]]


async def test_items_are_paged_in_id_order(api, catalogue) -> None:
    async with api() as client:
        first = (await client.get("/items", params={"k": 4})).json()
        last = (await client.get("/items", params={"k": 4, "offset": 8})).json()
        default = (await client.get("/items")).json()
    assert first["total"] == N_ITEMS and first["snapshot_id"] == SNAPSHOT
    assert first["model_version"] == "v2"
    assert ids(first) == ["i0", "i1", "i2", "i3"] and first["next_offset"] == 4
    assert ids(last) == ["i8", "i9"] and last["next_offset"] is None
    assert len(default["items"]) == 10
    i3 = first["items"][3]
    assert i3 == {"item_id": "i3", "title": "Title 3", "genres": item_genres(3),
                  "attributes": {"release_year": 1993},
                  "n_interactions": int(EVENTS_PER_ITEM[3]), "n_users": int(EVENTS_PER_ITEM[3]),
                  "popularity_rank": 1, "in_model": True}


async def test_items_filter_by_genre_and_any_attribute(api, catalogue) -> None:
    async with api() as client:
        horror = (await client.get("/items", params={"genre": "Horror"})).json()
        drama_95 = (await client.get("/items", params=[("filter", "genres:Drama"),
                                                        ("filter", "release_year:1995")])).json()
        by_title = (await client.get("/items", params={"filter": "title:Title 7"})).json()
        popular = (await client.get("/items", params={"filter": "popularity_rank:1"})).json()
        unknown = await client.get("/items", params={"filter": "colour:red"})
        malformed = await client.get("/items", params={"filter": "genres"})
        too_many = await client.get("/items", params={"k": 101})
    want = [f"i{k}" for k in range(N_ITEMS) if "Horror" in item_genres(k)]
    assert ids(horror) == want and horror["total"] == len(want)
    assert ids(drama_95) == ["i5"]  # item 5: Horror and Drama (k % 5 == 0)
    assert ids(by_title) == ["i7"]
    top = int(EVENTS_PER_ITEM.max())
    assert ids(popular) == [f"i{k}" for k in range(N_ITEMS) if EVENTS_PER_ITEM[k] == top]
    assert unknown.status_code == 422
    message = unknown.json()["detail"][0]["msg"]
    assert "colour" in message and "release_year" in message and "genres" in message
    assert malformed.status_code == 422 and too_many.status_code == 422


async def test_item_detail_has_attributes_and_online_features(api, catalogue) -> None:
    async with api() as client:
        r = await client.get("/items/i3")
        missing = await client.get("/items/nope")
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["item_id"] == "i3" and body["title"] == "Title 3"
    assert body["genres"] == item_genres(3) and body["attributes"] == {"release_year": 1993}
    assert body["snapshot_id"] == SNAPSHOT and body["in_model"] is True
    features = body["features"]
    assert features["n_interactions"] == EVENTS_PER_ITEM[3] and features["popularity_rank"] == 1
    assert {"n_users", "mean_rating", "first_ts", "last_ts", "trending_rank"} <= set(features)
    assert missing.status_code == 404 and "nope" in missing.json()["detail"]


async def test_catalogue_and_stats_need_the_key(api, catalogue) -> None:
    async with api(key=None) as client:
        refused = [await client.get(path) for path in ENDPOINTS]
    async with api(key="wrong") as client:
        wrong = [await client.get(path) for path in ENDPOINTS]
    assert [r.status_code for r in refused] == [401] * len(ENDPOINTS)
    assert [r.status_code for r in wrong] == [401] * len(ENDPOINTS)


def v2_counts() -> Counter:
    return Counter(i for j in range(N_USERS) for i in v2_list(j))


async def test_overview(api, catalogue) -> None:
    async with api() as client:
        body = (await client.get("/stats/overview")).json()
    listed = v2_counts()
    assert body["model_version"] == "v2" and body["previous_version"] == "v1"
    assert body["switched_at"] is not None and body["generated_at"] is not None
    assert (body["users"], body["items"]) == (N_USERS, N_ITEMS)
    assert body["interactions"] == int(EVENTS_PER_ITEM.sum())
    assert (body["model_users"], body["model_items"]) == (N_USERS, N_ITEMS)
    assert body["feature_snapshot"] == SNAPSHOT
    assert body["coverage"] == {"catalogue_items": N_ITEMS, "catalogue": "online features",
                                "recommended_items": len(listed),
                                "share": round(len(listed) / N_ITEMS, 4), "lists": N_USERS,
                                "slots": sum(listed.values())}
    last = body["last_publish"]
    assert last["version"] == "v2" and last["status"] == "ready" and last["active"] is True
    assert last["created_at"] and last["ready_at"]
    assert body["metrics"] == {"als.ndcg@10": 0.31, "als.recall@10": 0.2,
                               "popular.ndcg@10": 0.12, "k": 10}


async def test_categories(api, catalogue) -> None:
    async with api() as client:
        body = (await client.get("/stats/categories")).json()
    listed = v2_counts()
    slots = sum(listed.values())
    assert body["items"] == N_ITEMS and body["slots"] == slots
    rows = {row["genre"]: row for row in body["categories"]}
    assert set(rows) == {"Comedy", "Drama", "Horror"}
    for genre, row in rows.items():
        items = [f"i{k}" for k in range(N_ITEMS) if genre in item_genres(k)]
        interactions = int(sum(EVENTS_PER_ITEM[int(i[1:])] for i in items))
        genre_slots = sum(listed[i] for i in items)
        recommended = sum(1 for i in items if listed[i])
        assert row == {"genre": genre, "items": len(items), "interactions": interactions,
                       "interaction_share": round(interactions / EVENTS_PER_ITEM.sum(), 4),
                       "recommended_items": recommended,
                       "coverage": round(recommended / len(items), 4),
                       "slots": genre_slots, "rec_share": round(genre_slots / slots, 4)}, genre
    order = [(row["interactions"], row["slots"]) for row in body["categories"]]
    assert order == sorted(order, reverse=True)


async def test_without_online_features(api, store: MongoServingStore) -> None:
    """A version published with no feature snapshot online: an empty catalogue, and the
    recommendation counts over the model's own items."""
    write_payload_version(store.db, make_payload("v1", attributes=True))
    store.activate("v1")
    async with api() as client:
        items = (await client.get("/items")).json()
        detail = await client.get("/items/i1")
        overview = (await client.get("/stats/overview")).json()
        cats = (await client.get("/stats/categories")).json()
    assert items["snapshot_id"] is None and items["items"] == [] and items["total"] == 0
    assert detail.status_code == 404
    assert overview["users"] is None and overview["interactions"] is None
    assert overview["coverage"]["catalogue"] == "model"
    assert overview["coverage"]["catalogue_items"] == 30
    assert cats["feature_snapshot"] is None and cats["items"] is None
    assert all(row["interactions"] is None and row["slots"] is not None
               for row in cats["categories"])


async def test_snapshot_without_catalogue_totals(api, catalogue, db) -> None:
    """A snapshot materialized before catalogue totals were recorded: counts still shown,
    interactions unknown, no collection scanned to make them up."""
    db[FEATURE_SNAPSHOTS].update_one({"_id": SNAPSHOT}, {"$unset": {"catalogue": ""}})
    async with api() as client:
        overview = (await client.get("/stats/overview")).json()
        cats = (await client.get("/stats/categories")).json()
    assert (overview["users"], overview["items"]) == (N_USERS, N_ITEMS)
    assert overview["interactions"] is None
    assert overview["coverage"]["catalogue"] == "model"
    assert cats["interactions"] is None
    assert all(row["interactions"] is None for row in cats["categories"])


async def test_aggregates_are_computed_once_per_version(api, catalogue,
                                                        store: MongoServingStore) -> None:
    async with api() as client:
        svc = client.app.state.services
        calls = 0
        original = svc.aggregates.get

        async def counting(version, name, compute):
            async def wrapped():
                nonlocal calls
                calls += 1
                return await compute()
            return await original(version, name, wrapped)

        svc.aggregates.get = counting
        for _ in range(3):
            assert (await client.get("/stats/categories")).status_code == 200
        assert calls == 1  # the version document, read once
        store.activate("v1")
        await svc.active.refresh()
        body = (await client.get("/stats/categories")).json()
        assert body["model_version"] == "v1" and calls == 2


async def test_version_cache_runs_one_computation_and_forgets_failures() -> None:
    cache = VersionCache()
    runs = 0

    async def compute() -> int:
        nonlocal runs
        runs += 1
        await asyncio.sleep(0.01)
        return runs

    values = await asyncio.gather(*(cache.get("v1", "x", compute) for _ in range(5)))
    assert values == [1] * 5 and runs == 1

    async def fail() -> int:
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError):
        await cache.get("v1", "y", fail)
    assert await cache.get("v1", "y", compute) == 2
    assert await cache.get("v2", "x", compute) == 3  # another version: computed again


def test_recommendation_stats_known_answer() -> None:
    rec = np.array([[0, 1, 2], [1, 2, -1], [-1, -1, -1], [3, 1, 0]], dtype=np.int32)
    genres = [["A"], ["A", "B", "A"], None, ["C"], ["B"]]
    stats = recommendation_stats(rec, 5, genres)
    assert {k: v for k, v in stats.items() if k != "genres"} == {
        "lists": 3, "slots": 8, "items": 5, "recommended_items": 4}
    # per item: 0 -> 2 slots, 1 -> 3, 2 -> 2, 3 -> 1, 4 -> 0
    assert stats["genres"] == [
        {"genre": "A", "items": 2, "recommended_items": 2, "slots": 5},
        {"genre": "B", "items": 2, "recommended_items": 1, "slots": 3},
        {"genre": "C", "items": 1, "recommended_items": 1, "slots": 1},
    ]
    assert recommendation_stats(rec, 5)["genres"] is None


async def test_openapi_documents_the_catalogue(api) -> None:
    async with api() as client:
        spec = (await client.get("/openapi.json")).json()
    for path in ENDPOINTS[:1] + ("/items/{item_id}",) + ENDPOINTS[2:]:
        op = spec["paths"][path]["get"]
        assert op.get("description") and op.get("summary"), path
        assert {"200", "401", "429", "503"} <= set(op["responses"]), path
    schemas = spec["components"]["schemas"]
    for name in ("ItemsPagePublic", "ItemDetailPublic", "OverviewPublic", "CategoriesPublic"):
        assert schemas[name].get("examples"), name
