"""MongoServingStore against a real secantusd-py server."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from pymongo.database import Database

from recsys.errors import PublishError
from serving.store import (
    STATUS_BUILDING,
    STATUS_READY,
    VERSIONS,
    MongoServingStore,
    decode_vector,
    item_embeddings_collection,
    popular_collection,
    recs_collection,
    similar_collection,
    user_embeddings_collection,
    version_collections,
)
from tests.serving.payloads import (
    FACTORS,
    GENERATED_AT,
    N_ITEMS,
    N_USERS,
    POPULAR_N,
    TOP_N,
    make_payload,
)

pytestmark = pytest.mark.integration


def test_publish_writes_every_collection(store: MongoServingStore, db: Database) -> None:
    payload = make_payload("v1")
    summary = store.publish(payload, batch_size=7)  # several batches per collection

    assert summary["version"] == "v1"
    assert summary["counts"] == {"users": N_USERS, "items": N_ITEMS, "recs": N_USERS,
                                 "similar": N_ITEMS, "popular": POPULAR_N, "factors": FACTORS}
    assert summary["seconds"] > 0 and summary["replaced"] is False
    assert set(version_collections("v1")) <= set(db.list_collection_names())
    assert db[recs_collection("v1")].count_documents({}) == N_USERS
    assert db[similar_collection("v1")].count_documents({}) == N_ITEMS
    assert db[user_embeddings_collection("v1")].count_documents({}) == N_USERS
    assert db[item_embeddings_collection("v1")].count_documents({}) == N_ITEMS

    doc = db[recs_collection("v1")].find_one({"_id": "u3"})
    assert doc["model_version"] == "v1"
    assert doc["generated_at"] == GENERATED_AT
    assert [it["item_id"] for it in doc["items"]] == [f"i{(3 + j) % N_ITEMS}" for j in range(TOP_N)]
    assert [it["rank"] for it in doc["items"]] == list(range(1, TOP_N + 1))
    assert doc["items"][0]["score"] == pytest.approx(1.0)

    padded = db[recs_collection("v1")].find_one({"_id": f"u{N_USERS - 1}"})
    assert len(padded["items"]) == 3  # -1 padding dropped

    sim = db[similar_collection("v1")].find_one({"_id": "i0"})
    assert [it["item_id"] for it in sim["items"]][:2] == ["i1", "i2"]

    pop = db[popular_collection("v1")].find_one({"_id": "popular"})
    assert [it["item_id"] for it in pop["items"]][:3] == ["i9", "i8", "i7"]
    assert len(pop["items"]) == POPULAR_N

    emb = db[user_embeddings_collection("v1")].find_one({"_id": "u5"})
    assert emb["dim"] == FACTORS and emb["vector"].subtype == 9
    assert np.array_equal(np.array(decode_vector(emb["vector"]), dtype=np.float32),
                          payload.user_factors[5])

    version = store.get_version("v1")
    assert version["status"] == STATUS_READY
    assert version["metadata"]["metrics"] == {"precision_at_10": 0.25}
    assert version["generated_at"] == GENERATED_AT
    assert store.active_version() is None  # publish never activates

    index_keys = [ix["key"] for ix in db[VERSIONS].list_indexes()]
    assert {"status": 1, "created_at": -1} in [dict(k) for k in index_keys]
    assert [ix["key"] for ix in db[recs_collection("v1")].list_indexes()] == [{"_id": 1}]


def test_activate_switch_and_rollback(store: MongoServingStore) -> None:
    store.publish(make_payload("v1"))
    store.publish(make_payload("v2", seed=1))
    assert store.activate("v1") is None
    assert store.active_version() == "v1"
    assert store.activate("v2") == "v1"
    state = store.active_state()
    assert state["version"] == "v2" and state["previous"] == "v1"
    assert state["switched_at"].tzinfo is not None
    assert store.activate("v2") == "v2"  # no-op
    assert store.rollback() == "v1"
    assert store.active_version() == "v1"
    versions = {d["_id"]: d for d in store.list_versions()}
    assert versions["v1"]["active"] and not versions["v2"]["active"]


def test_activate_unknown_or_building_leaves_pointer(
    store: MongoServingStore, db: Database
) -> None:
    with pytest.raises(PublishError, match="unknown"):
        store.activate("nope")
    assert store.active_version() is None

    store.publish(make_payload("v1"))
    store.activate("v1")
    db[VERSIONS].insert_one({"_id": "v2", "status": STATUS_BUILDING})
    with pytest.raises(PublishError, match="building"):
        store.activate("v2")
    with pytest.raises(PublishError, match="unknown"):
        store.activate("v3")
    assert store.active_version() == "v1"


def test_republish_is_idempotent(store: MongoServingStore, db: Database) -> None:
    store.publish(make_payload("v1"))
    summary = store.publish(make_payload("v1", seed=5))
    assert summary["replaced"] is True
    assert db[recs_collection("v1")].count_documents({}) == N_USERS
    assert store.get_version("v1")["status"] == STATUS_READY


def test_republish_after_crash_rewrites(store: MongoServingStore, db: Database) -> None:
    # Simulate a crashed run: version document "building" plus a half-written collection.
    db[VERSIONS].insert_one({"_id": "v1", "status": STATUS_BUILDING})
    db[recs_collection("v1")].insert_many([{"_id": "u0"}, {"_id": "stale"}])
    store.publish(make_payload("v1"))
    assert db[recs_collection("v1")].find_one({"_id": "stale"}) is None
    assert db[recs_collection("v1")].count_documents({}) == N_USERS
    assert store.get_version("v1")["status"] == STATUS_READY


def test_publish_refuses_active_version(store: MongoServingStore, db: Database) -> None:
    store.publish(make_payload("v1"))
    store.activate("v1")
    with pytest.raises(PublishError, match="active"):
        store.publish(make_payload("v1", seed=3))
    assert store.get_version("v1")["status"] == STATUS_READY
    assert db[recs_collection("v1")].count_documents({}) == N_USERS


def test_prune_keeps_newest_and_active(store: MongoServingStore, db: Database) -> None:
    for v in ["v1", "v2", "v3", "v4"]:
        store.publish(make_payload(v))
    store.activate("v1")  # the oldest is active
    dropped = store.prune(keep=2)
    assert sorted(dropped) == ["v2"]
    assert [d["_id"] for d in store.list_versions()] == ["v4", "v3", "v1"]
    names = set(db.list_collection_names())
    assert not set(version_collections("v2")) & names
    assert set(version_collections("v1")) <= names
    assert store.prune(keep=2) == []
    assert store.active_version() == "v1"


def test_cleanup_incomplete(store: MongoServingStore, db: Database) -> None:
    store.publish(make_payload("v1"))
    store.activate("v1")
    db[VERSIONS].insert_one({"_id": "crashed", "status": STATUS_BUILDING})
    db[recs_collection("crashed")].insert_one({"_id": "u0"})
    assert store.cleanup_incomplete() == ["crashed"]
    assert store.get_version("crashed") is None
    assert recs_collection("crashed") not in db.list_collection_names()
    assert store.get_version("v1")["status"] == STATUS_READY
    assert store.cleanup_incomplete() == []


@pytest.mark.parametrize("version", ["", "a b", "v$1", "../x", "x" * 101])
def test_bad_version_name(store: MongoServingStore, version: str) -> None:
    with pytest.raises(PublishError, match="invalid model version"):
        store.publish(make_payload(version))


def test_bad_payload_is_refused_before_writing(store: MongoServingStore, db: Database) -> None:
    payload = make_payload("v1")
    bad = payload.rec_items.copy()
    bad[0, 0] = N_ITEMS  # out of range
    with pytest.raises(PublishError, match="out of range"):
        store.publish(dataclasses.replace(payload, rec_items=bad))
    gap = payload.rec_items.copy()
    gap[0, 1] = -1  # padding in the middle
    with pytest.raises(PublishError, match="padding"):
        store.publish(dataclasses.replace(payload, rec_items=gap))
    dup = payload.user_ids.copy()
    dup[1] = dup[0]
    with pytest.raises(PublishError, match="unique"):
        store.publish(dataclasses.replace(payload, user_ids=dup))
    assert store.get_version("v1") is None


def test_open_store_from_settings(mongo_uri: str, db_name: str, mongo_client) -> None:
    from recsys.settings import Settings
    from serving.store import open_store

    settings = Settings(mongodb_uri=mongo_uri, mongodb_db=db_name)
    try:
        with open_store(settings) as store:
            store.publish(make_payload("v1"))
            store.activate("v1")
        assert mongo_client[db_name]["serving_state"].find_one()["version"] == "v1"
    finally:
        mongo_client.drop_database(db_name)
