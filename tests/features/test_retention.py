"""Retention keeps the newest K snapshots and every one a model references."""

import json

import pytest
from pymongo import MongoClient

from features.retention import prune_snapshots
from features.snapshot import build_snapshot, list_manifests
from recsys.settings import Settings

pytestmark = pytest.mark.integration


def test_prune_keeps_newest_and_referenced(raw_files, tmp_path, mongo_uri, mongo_db_name):
    settings = Settings(mongodb_uri=mongo_uri, mongodb_db=mongo_db_name, data_dir=tmp_path,
                        feature_keep_snapshots=2)
    for i in range(6):
        build_snapshot(raw_files, features_root=settings.features_dir, snapshot_id=f"s{i}")
    # s0: published in MongoDB; s1: local model registry only
    client = MongoClient(mongo_uri)
    client[mongo_db_name]["model_versions"].insert_one(
        {"_id": "v0", "status": "ready", "metadata": {"feature_snapshot": "s0"}})
    client.close()
    (settings.models_dir / "v1").mkdir(parents=True)
    (settings.models_dir / "v1" / "metadata.json").write_text(
        json.dumps({"feature_snapshot": "s1"}))

    assert prune_snapshots(settings, dry_run=True) == ["s2", "s3"]
    assert len(list_manifests(settings.features_dir)) == 6
    assert prune_snapshots(settings) == ["s2", "s3"]
    left = {m.snapshot_id for m in list_manifests(settings.features_dir)}
    assert left == {"s0", "s1", "s4", "s5"}
    assert not (settings.features_dir / "interactions" / "snapshot=s2").exists()
    assert (settings.features_dir / "interactions" / "snapshot=s0" / "data.parquet").exists()
    assert prune_snapshots(settings, keep=1) == ["s4"]


def test_unreachable_mongo_deletes_nothing(raw_files, tmp_path):
    from recsys.errors import FeatureStoreError

    settings = Settings(mongodb_uri="mongodb://127.0.0.1:1", mongodb_timeout_ms=200,
                        data_dir=tmp_path, feature_keep_snapshots=1)
    for i in range(3):
        build_snapshot(raw_files, features_root=settings.features_dir, snapshot_id=f"s{i}")
    with pytest.raises(FeatureStoreError, match="no snapshot was deleted"):
        prune_snapshots(settings)
    assert len(list_manifests(settings.features_dir)) == 3
