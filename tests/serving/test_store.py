"""MongoServingStore, and writing a whole payload as a version (`write_payload_version`),
against a real secantusd-py server."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from pymongo.database import Database

from recsys.errors import InvalidId, PublishError
from recsys.mongo import MODEL_VERSIONS as VERSIONS
from recsys.mongo import (
    item_embeddings_collection,
    popular_collection,
    recs_collection,
    similar_collection,
    user_embeddings_collection,
)
from recsys.mongo import serving_collections as version_collections
from recsys.versions import ABANDONED_KEEP, STATUS_ABANDONED, STATUS_BUILDING, STATUS_READY
from serving import version_writer
from serving.documents import decode_vector
from serving.store import MongoServingStore, referenced_snapshots
from serving.version_writer import write_payload_version
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
    summary = write_payload_version(store.db, payload, batch_size=7)  # several batches each

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


def test_publish_reports_progress_per_batch(store: MongoServingStore) -> None:
    seen: list[tuple[str, int, int | None]] = []
    write_payload_version(store.db, make_payload("v1"), batch_size=7,
                          progress=lambda step, done, total: seen.append((step, done, total)))
    recs = [done for step, done, _ in seen if step == "publish recs"]
    # after each batch of the users' part, then once more when every part has finished
    assert recs == [*range(7, N_USERS, 7), N_USERS, N_USERS]
    assert {step: (done, total) for step, done, total in seen} == {
        "publish recs": (N_USERS, N_USERS), "publish user_embeddings": (N_USERS, N_USERS),
        "publish similar": (N_ITEMS, N_ITEMS), "publish popular": (1, 1),
        "publish item_embeddings": (N_ITEMS, N_ITEMS)}


def test_activate_switch_and_rollback(store: MongoServingStore) -> None:
    write_payload_version(store.db, make_payload("v1"))
    write_payload_version(store.db, make_payload("v2", seed=1))
    assert store.activate("v1") is None
    assert store.active_version() == "v1"
    assert store.activate("v2") == "v1"
    state = store.active_state()
    assert state["version"] == "v2" and state["previous"] == "v1"
    assert state["switched_at"].tzinfo is not None
    assert store.activate("v2") == "v2"  # no-op
    assert store.previous_version() == "v1"
    assert store.activate(store.previous_version()) == "v2"  # what a rollback switches
    assert store.active_version() == "v1" and store.previous_version() == "v2"
    versions = {d["_id"]: d for d in store.list_versions()}
    assert versions["v1"]["active"] and not versions["v2"]["active"]


def test_activate_unknown_or_building_leaves_pointer(
    store: MongoServingStore, db: Database
) -> None:
    with pytest.raises(PublishError, match="unknown"):
        store.activate("nope")
    assert store.active_version() is None

    write_payload_version(store.db, make_payload("v1"))
    store.activate("v1")
    db[VERSIONS].insert_one({"_id": "v2", "status": STATUS_BUILDING})
    with pytest.raises(PublishError, match="building"):
        store.activate("v2")
    with pytest.raises(PublishError, match="unknown"):
        store.activate("v3")
    assert store.active_version() == "v1"


def test_republish_is_idempotent(store: MongoServingStore, db: Database) -> None:
    write_payload_version(store.db, make_payload("v1"))
    summary = write_payload_version(store.db, make_payload("v1", seed=5))
    assert summary["replaced"] is True
    assert db[recs_collection("v1")].count_documents({}) == N_USERS
    assert store.get_version("v1")["status"] == STATUS_READY


def test_republish_after_crash_rewrites(store: MongoServingStore, db: Database) -> None:
    # Simulate a crashed run: version document "building" plus a half-written collection.
    db[VERSIONS].insert_one({"_id": "v1", "status": STATUS_BUILDING})
    db[recs_collection("v1")].insert_many([{"_id": "u0"}, {"_id": "stale"}])
    write_payload_version(store.db, make_payload("v1"))
    assert db[recs_collection("v1")].find_one({"_id": "stale"}) is None
    assert db[recs_collection("v1")].count_documents({}) == N_USERS
    assert store.get_version("v1")["status"] == STATUS_READY


def test_publish_refuses_active_version(store: MongoServingStore, db: Database) -> None:
    write_payload_version(store.db, make_payload("v1"))
    store.activate("v1")
    with pytest.raises(PublishError, match="active"):
        write_payload_version(store.db, make_payload("v1", seed=3))
    assert store.get_version("v1")["status"] == STATUS_READY
    assert db[recs_collection("v1")].count_documents({}) == N_USERS


def test_prune_keeps_newest_and_active(store: MongoServingStore, db: Database) -> None:
    for v in ["v1", "v2", "v3", "v4"]:
        write_payload_version(store.db, make_payload(v))
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
    write_payload_version(store.db, make_payload("v1"))
    store.activate("v1")
    db[VERSIONS].insert_one({"_id": "crashed", "status": STATUS_BUILDING})
    db[recs_collection("crashed")].insert_one({"_id": "u0"})
    assert store.cleanup_incomplete() == ["crashed"]
    assert store.get_version("crashed")["status"] == STATUS_ABANDONED
    assert recs_collection("crashed") not in db.list_collection_names()
    assert store.get_version("v1")["status"] == STATUS_READY
    assert store.cleanup_incomplete() == []


def test_an_abandoned_version_is_dropped_again_until_forgotten(
    store: MongoServingStore, db: Database
) -> None:
    """One batch of a late writer can recreate a collection after the cleanup dropped it: the
    tombstone makes the next cleanup drop it again, and goes once ABANDONED_KEEP has passed."""
    db[VERSIONS].insert_one({"_id": "crashed", "status": STATUS_BUILDING})
    db[recs_collection("crashed")].insert_one({"_id": "u0"})
    assert store.cleanup_incomplete() == ["crashed"]
    abandoned_at = store.get_version("crashed")["abandoned_at"]
    db[recs_collection("crashed")].insert_one({"_id": "u1"})  # the late batch lands
    assert store.cleanup_incomplete(now=abandoned_at + ABANDONED_KEEP / 2) == []
    assert recs_collection("crashed") not in db.list_collection_names()
    assert store.get_version("crashed")["status"] == STATUS_ABANDONED
    assert store.list_versions()[0]["status"] == STATUS_ABANDONED
    db[recs_collection("crashed")].insert_one({"_id": "u2"})
    assert store.cleanup_incomplete(now=abandoned_at + ABANDONED_KEEP) == []
    assert recs_collection("crashed") not in db.list_collection_names()
    assert store.get_version("crashed") is None


def test_a_rewrite_of_an_abandoned_version_publishes_it_whole(
    store: MongoServingStore, db: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    _fail_after(monkeypatch, 3)
    with pytest.raises(_Boom):
        write_payload_version(store.db, make_payload("v2", seed=3), batch_size=4)
    monkeypatch.undo()
    assert store.cleanup_incomplete() == ["v2"]
    summary = write_payload_version(store.db, make_payload("v2", seed=3), batch_size=4)
    assert summary["replaced"] is False  # nothing of the abandoned attempt was left
    assert store.get_version("v2")["status"] == STATUS_READY
    assert "abandoned_at" not in store.get_version("v2")
    assert db[recs_collection("v2")].count_documents({}) == N_USERS


@pytest.mark.parametrize("version", ["", "a b", "v$1", "../x", ".x", "x" * 101])
def test_bad_version_name(store: MongoServingStore, db: Database, version: str) -> None:
    with pytest.raises(InvalidId, match="invalid model version"):
        write_payload_version(store.db, make_payload(version))
    assert db[VERSIONS].count_documents({}) == 0


def test_bad_payload_is_refused_before_writing(store: MongoServingStore, db: Database) -> None:
    payload = make_payload("v1")
    bad = payload.rec_items.copy()
    bad[0, 0] = N_ITEMS  # out of range
    with pytest.raises(PublishError, match="out of range"):
        write_payload_version(store.db, dataclasses.replace(payload, rec_items=bad))
    gap = payload.rec_items.copy()
    gap[0, 1] = -1  # padding in the middle
    with pytest.raises(PublishError, match="padding"):
        write_payload_version(store.db, dataclasses.replace(payload, rec_items=gap))
    dup = payload.user_ids.copy()
    dup[1] = dup[0]
    with pytest.raises(PublishError, match="unique"):
        write_payload_version(store.db, dataclasses.replace(payload, user_ids=dup))
    assert store.get_version("v1") is None


def test_open_store_from_settings(mongo_uri: str, db_name: str, mongo_client) -> None:
    from recsys.settings import Settings
    from serving.store import open_store

    settings = Settings(mongodb_uri=mongo_uri, mongodb_db=db_name)
    try:
        with open_store(settings) as store:
            write_payload_version(store.db, make_payload("v1"))
            store.activate("v1")
        assert mongo_client[db_name]["serving_state"].find_one()["version"] == "v1"
    finally:
        mongo_client.drop_database(db_name)


# --------------------------------------------------------------------------- issue 6

def test_publish_denormalises_attributes_and_explanations(
    store: MongoServingStore, db: Database
) -> None:
    from tests.serving.payloads import item_genres

    write_payload_version(store.db, make_payload("v1", attributes=True, explain=True), batch_size=3)
    doc = db[recs_collection("v1")].find_one({"_id": "u2"})
    first = doc["items"][0]
    assert first["item_id"] == "i2" and first["genres"] == item_genres(2)
    assert first["because"] == [{"item_id": f"i{(2 + 7) % N_ITEMS}", "contribution": 0.5},
                                {"item_id": f"i{(2 + 8) % N_ITEMS}", "contribution": 0.25}]
    padded = db[recs_collection("v1")].find_one({"_id": f"u{N_USERS - 1}"})
    assert len(padded["items"]) == 3 and all(len(it["because"]) == 2 for it in padded["items"])
    sim = db[similar_collection("v1")].find_one({"_id": "i0"})
    assert sim["items"][0]["genres"] == item_genres(1) and "because" not in sim["items"][0]
    pop = db[popular_collection("v1")].find_one({"_id": "popular"})
    assert pop["items"][0]["genres"] == item_genres(9)
    assert store.get_version("v1")["features"] == {"item_attributes": ["genres"],
                                                   "explanations": True}


def test_bad_explanations_and_attributes_are_refused(store: MongoServingStore) -> None:
    payload = make_payload("v1", explain=True)
    bad = payload.rec_explain_items.copy()
    bad[0, 0, 0] = N_ITEMS
    with pytest.raises(PublishError, match="rec_explain_items.*out of range"):
        write_payload_version(store.db, dataclasses.replace(payload, rec_explain_items=bad))
    with pytest.raises(PublishError, match="invalid attribute name"):
        write_payload_version(store.db, dataclasses.replace(
            payload, item_attributes={"a.b": [0] * N_ITEMS}))
    assert store.get_version("v1") is None


class _Boom(RuntimeError):
    pass


def _fail_after(monkeypatch: pytest.MonkeyPatch, calls: int) -> None:
    """Make the writing of the `calls`-th collection of the next publish raise after its first
    document (the collections before it are written for real)."""
    real = version_writer.insert_documents
    seen = {"n": 0}

    def flaky(coll, docs, batch_size, **kwargs):  # type: ignore[no-untyped-def]
        seen["n"] += 1
        if seen["n"] == calls:
            # write part of this collection for real, then die mid-collection
            coll.insert_one(next(iter(docs)))
            raise _Boom(f"injected failure while writing {coll.name}")
        return real(coll, docs, batch_size, **kwargs)

    monkeypatch.setattr(version_writer, "insert_documents", flaky)


@pytest.mark.parametrize("fail_at", [1, 3, 5])
def test_fault_mid_publish_keeps_previous_serving_and_is_cleaned(
    store: MongoServingStore, db: Database, monkeypatch: pytest.MonkeyPatch, fail_at: int
) -> None:
    write_payload_version(store.db, make_payload("v1"))
    store.activate("v1")
    _fail_after(monkeypatch, fail_at)
    with pytest.raises(_Boom):
        write_payload_version(store.db, make_payload("v2", seed=3), batch_size=4)
    monkeypatch.undo()
    assert store.active_version() == "v1"
    assert store.get_version("v2")["status"] == STATUS_BUILDING
    with pytest.raises(PublishError, match="building"):
        store.activate("v2")
    # the next run cleans up, and a rerun of the same id publishes it completely
    assert store.cleanup_incomplete() == ["v2"]
    assert not set(version_collections("v2")) & set(db.list_collection_names())
    summary = write_payload_version(store.db, make_payload("v2", seed=3), batch_size=4)
    assert summary["replaced"] is False
    assert db[recs_collection("v2")].count_documents({}) == N_USERS
    assert store.activate("v2") == "v1"


def test_rerun_same_id_without_cleanup_is_idempotent(
    store: MongoServingStore, db: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    _fail_after(monkeypatch, 2)
    with pytest.raises(_Boom):
        write_payload_version(store.db, make_payload("v1"), batch_size=4)
    monkeypatch.undo()
    first = write_payload_version(store.db, make_payload("v1"), batch_size=4)
    second = write_payload_version(store.db, make_payload("v1"), batch_size=4)
    assert first["replaced"] and second["replaced"]
    assert {n: db[n].count_documents({}) for n in version_collections("v1")} == {
        recs_collection("v1"): N_USERS, similar_collection("v1"): N_ITEMS,
        popular_collection("v1"): 1, user_embeddings_collection("v1"): N_USERS,
        item_embeddings_collection("v1"): N_ITEMS,
    }


@pytest.mark.parametrize(("collection", "lost", "error"), [
    # a user's list: the sample check of the users' part finds it first
    (recs_collection("v2"), "u0", "sample check failed for user 'u0'"),
    # an item's similar list: the count check finds it
    (similar_collection("v2"), "i0", f"holds {N_ITEMS - 1} documents"),
])
def test_verification_failure_blocks_the_switch(
    store: MongoServingStore, db: Database, monkeypatch: pytest.MonkeyPatch, collection: str,
    lost: str, error: str
) -> None:
    write_payload_version(store.db, make_payload("v1"))
    store.activate("v1")
    real = version_writer.insert_documents

    def lossy(coll, docs, batch_size, **kwargs):  # type: ignore[no-untyped-def]
        written = real(coll, docs, batch_size, **kwargs)
        if coll.name == collection:
            coll.delete_one({"_id": lost})  # a document lost after the write
        return written

    monkeypatch.setattr(version_writer, "insert_documents", lossy)
    with pytest.raises(PublishError, match=error):
        write_payload_version(store.db, make_payload("v2"))
    assert store.get_version("v2")["status"] == STATUS_BUILDING
    assert store.active_version() == "v1"



def test_prune_protects_and_referenced_snapshots(store: MongoServingStore, db: Database) -> None:
    for v, snapshot in (("v1", "s1"), ("v2", "s2"), ("v3", None), ("v4", "s4")):
        payload = make_payload(v)
        if snapshot:
            payload.metadata["feature_snapshot"] = snapshot
        write_payload_version(store.db, payload)
    store.activate("v4")
    assert referenced_snapshots(db) == {"s1", "s2", "s4"}
    assert store.prune(keep=1, protect={"v1"}) == ["v3", "v2"]  # newest first, v1 protected
    assert {d["_id"] for d in store.list_versions()} == {"v4", "v1"}
    assert referenced_snapshots(db) == {"s1", "s4"}


def test_verify_active_names_what_is_wrong(store: MongoServingStore, db: Database) -> None:
    with pytest.raises(PublishError, match="no active model version"):
        store.verify_active()
    write_payload_version(store.db, make_payload("v1"))
    store.activate("v1")
    assert store.verify_active() == {"version": "v1", "users": N_USERS}
    db.drop_collection(similar_collection("v1"))
    with pytest.raises(PublishError, match=r"lacks collections \['similar_v1'\]"):
        store.verify_active()
