"""Online materialization against the real secantusd-py server."""

import pytest
from pymongo import MongoClient

from features.online import (
    REGISTRY_COLLECTION,
    feature_collection,
    materialize_into,
    materialize_online,
    online_snapshot,
    read_online_features,
)
from features.snapshot import build_snapshot
from recsys.errors import FeatureStoreError
from recsys.settings import Settings

pytestmark = pytest.mark.integration


@pytest.fixture
def db(mongo_uri, mongo_db_name):
    client = MongoClient(mongo_uri, tz_aware=True)
    yield client[mongo_db_name]
    client.drop_database(mongo_db_name)
    client.close()


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


def test_materialize_online_uses_settings(raw_files, tmp_path, mongo_uri, mongo_db_name):
    settings = Settings(mongodb_uri=mongo_uri, mongodb_db=mongo_db_name, data_dir=tmp_path)
    m = build_snapshot(raw_files, features_root=settings.features_dir, snapshot_id="s1")
    assert materialize_online(m, settings=settings)["counts"] == {"users": 3, "items": 2}
    with pytest.raises(FeatureStoreError, match="cannot name"):
        feature_collection("users", "bad id!")
