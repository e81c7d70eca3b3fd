"""Online materialization against the real secantusd-py server."""

import pytest
from pymongo import MongoClient

from features.online import (
    cleanup_online,
    is_materialized,
    materialized_snapshots,
    online_snapshot,
    prune_online,
    read_online_features,
    switch_online,
    write_snapshot,
)
from features.snapshot import build_snapshot
from recsys.errors import FeatureStoreError, InvalidId
from recsys.mongo import FEATURE_SNAPSHOTS as REGISTRY_COLLECTION
from recsys.mongo import FEATURE_STATE, feature_collection
from recsys.settings import Settings

pytestmark = pytest.mark.integration


@pytest.fixture
def db(mongo_uri, mongo_db_name):
    client = MongoClient(mongo_uri, tz_aware=True)
    yield client[mongo_db_name]
    client.drop_database(mongo_db_name)
    client.close()


def materialize_into(db, manifest, *, batch_size=5000, keep=2):
    """Write, switch and prune, the sequence `serving.publish.publish_model` runs."""
    written = write_snapshot(db, manifest, batch_size=batch_size)
    previous = switch_online(db, manifest.snapshot_id)
    dropped = prune_online(db, keep=keep) if written["rewritten"] else []
    return {**written, "previous": previous, "dropped": dropped}


def test_materialize_switch_and_prune(raw_files, tmp_path, db):
    s1 = build_snapshot(raw_files, features_root=tmp_path / "f", snapshot_id="s1")
    s2 = build_snapshot(raw_files, features_root=tmp_path / "f", snapshot_id="s2")
    s3 = build_snapshot(raw_files, features_root=tmp_path / "f", snapshot_id="s3")
    first = materialize_into(db, s1, batch_size=2, keep=2)
    assert first["counts"] == {"users": 3, "items": 2} and first["previous"] is None
    assert online_snapshot(db) == "s1"
    user = db[feature_collection("users", "s1")].find_one({"_id": "a"})
    assert user["snapshot_id"] == "s1" and user["n_interactions"] == 3 and user["age"] == 20
    assert user["genre_affinity"][0] == {"genre": "Drama", "fraction": pytest.approx(0.75)}
    item = read_online_features(db, "items", ["x", "nope"])
    assert set(item) == {"x"} and item["x"]["genres"] == ["Drama"]
    assert item["x"]["popularity_rank"] == 1 and item["x"]["n_users"] == 2

    assert materialize_into(db, s2, keep=2)["previous"] == "s1"
    third = materialize_into(db, s3, keep=2)
    assert third["previous"] == "s2" and third["dropped"] == ["s1"]
    assert feature_collection("users", "s1") not in db.list_collection_names()
    assert {d["_id"] for d in db[REGISTRY_COLLECTION].find()} == {"s2", "s3"}
    # rollback: an already materialized snapshot is only switched to, not rewritten
    back = materialize_into(db, s2, keep=2)
    assert back["rewritten"] is False and online_snapshot(db) == "s2"


def test_failed_write_leaves_the_online_snapshot_unchanged(raw_files, tmp_path, db):
    good = build_snapshot(raw_files, features_root=tmp_path / "f", snapshot_id="good")
    materialize_into(db, good)
    bad = build_snapshot(raw_files, features_root=tmp_path / "f", snapshot_id="bad")
    bad.view_path("item_features").chmod(0o644)
    bad.view_path("item_features").write_bytes(b"not parquet")
    with pytest.raises(Exception):  # noqa: B017 - any read error must leave "good" online
        materialize_into(db, bad)
    assert online_snapshot(db) == "good"
    assert feature_collection("users", "bad") not in db.list_collection_names()
    assert db[REGISTRY_COLLECTION].find_one({"_id": "bad"}) is None
    assert read_online_features(db, "users", ["a"])["a"]["snapshot_id"] == "good"


def test_snapshot_ids_follow_the_id_rule() -> None:
    with pytest.raises(InvalidId, match="invalid snapshot id 'bad id!'"):
        feature_collection("users", "bad id!")


def test_write_then_switch_prune_protects_and_cleanup(raw_files, tmp_path, db):
    snaps = {sid: build_snapshot(raw_files, features_root=tmp_path / "f", snapshot_id=sid)
             for sid in ("s1", "s2", "s3")}
    written = write_snapshot(db, snaps["s1"])
    assert written["rewritten"] is True and written["counts"] == {"users": 3, "items": 2}
    assert is_materialized(db, "s1") and online_snapshot(db) is None  # written, not switched
    assert write_snapshot(db, snaps["s1"])["rewritten"] is False
    with pytest.raises(FeatureStoreError, match="unknown"):
        switch_online(db, "s2")
    assert switch_online(db, "s1") is None and online_snapshot(db) == "s1"
    for sid in ("s2", "s3"):
        write_snapshot(db, snaps[sid])
    assert switch_online(db, "s3") == "s1"
    state = db[FEATURE_STATE].find_one({"_id": "online"})
    assert (state["snapshot_id"], state["previous"]) == ("s3", "s1")
    # s1 is protected (a kept model uses it), s3 is online: only s2 goes
    assert prune_online(db, keep=1, protect={"s1"}) == ["s2"]
    assert materialized_snapshots(db) == {"s1", "s3"}
    # what a crashed materialization leaves is cleaned up, never the online snapshot
    db[REGISTRY_COLLECTION].insert_one({"_id": "crashed", "status": "building"})
    db[feature_collection("users", "crashed")].insert_one({"_id": "a"})
    assert cleanup_online(db) == ["crashed"]
    assert feature_collection("users", "crashed") not in db.list_collection_names()
    assert db[REGISTRY_COLLECTION].find_one({"_id": "crashed"})["status"] == "abandoned"
    assert materialized_snapshots(db) == {"s1", "s3"}  # an abandoned one protects no files
    assert online_snapshot(db) == "s3" and is_materialized(db, "s3")
