"""Retention composed over the data dir (`flows.housekeeping.prune_all`) and the health check, on
a hand-made data dir and a real secantusd-py.

The owners' own rules are tested with them: model versions in tests/training/test_registry.py,
feature snapshots in tests/features/test_retention.py.
"""

from __future__ import annotations

import dataclasses
import json
import os
import time
from pathlib import Path

import pytest
from pymongo import MongoClient

from features.online import online_versions
from features.snapshot import Manifest, ViewSnapshot, list_manifests
from flows.housekeeping import protected_snapshots, prune_all, prune_old_files
from serving.health import check_health
from recsys.errors import FeatureStoreError
from recsys.settings import Settings
from serving.store import MongoServingStore
from serving.version_writer import write_payload_version
from tests.serving.payloads import make_payload
from training.registry import list_models


def _snapshot(features: Path, snapshot: str, created: str) -> None:
    views = {}
    for view in ("interactions", "user_features"):
        out = features / view / f"snapshot={snapshot}"
        out.mkdir(parents=True)
        (out / "data.parquet").write_bytes(b"x")
        views[view] = ViewSnapshot(name=view, path=str(out / "data.parquet"), rows=1, schema=[])
    manifest = Manifest(snapshot_id=snapshot, created_at=created, as_of=None,
                        duckdb_version="test", sources={}, views=views)
    (features / "manifests").mkdir(parents=True, exist_ok=True)
    (features / "manifests" / f"{snapshot}.json").write_text(json.dumps(manifest.to_dict()))


def _model(models: Path, version: str, created: str, snapshot: str) -> None:
    """A complete-looking model version (placeholder model files: retention never loads them)."""
    (models / version).mkdir(parents=True)
    for name in ("model.npz", "ids.npz"):
        (models / version / name).write_bytes(b"x")
    (models / version / "metadata.json").write_text(json.dumps(
        {"version": version, "created_at": created, "feature_snapshot": snapshot}))


def test_old_files_only(tmp_path: Path) -> None:
    old, new = tmp_path / "a" / "old.log", tmp_path / "new.log"
    old.parent.mkdir()
    old.write_text("x")
    new.write_text("y")
    week_ago = time.time() - 7 * 86400
    os.utime(old, (week_ago, week_ago))
    assert prune_old_files(tmp_path, days=3, pattern="*.log") == ["a/old.log"]
    assert new.exists()


@pytest.mark.integration
def test_prune_all_never_removes_a_served_model(tmp_path: Path, mongo_uri: str,
                                                mongo_db_name: str) -> None:
    settings = Settings(mongodb_uri=mongo_uri, mongodb_db=mongo_db_name, data_dir=tmp_path)
    for day in range(1, 5):
        _snapshot(settings.features_dir, f"s{day}", f"2024-01-0{day}T00:00:00")
        _model(settings.models_dir, f"m{day}", f"2024-01-0{day}T00:00:00", f"s{day}")
    with MongoClient(mongo_uri) as client:
        store = MongoServingStore(client[mongo_db_name])
        write_payload_version(store.db, make_payload("m1"))
        store.activate("m1")
        try:
            removed = prune_all(settings, keep_snapshots=1, keep_models=1)
        finally:
            client.drop_database(mongo_db_name)
    assert removed["models"] == ["m2", "m3"]  # m1 is served, m4 is the newest
    assert removed["snapshots"] == ["s2", "s3"]  # s1 and s4 belong to kept models
    assert [m.version for m in list_models(settings.models_dir)] == ["m4", "m1"]


@pytest.mark.integration
def test_health_ok_with_an_active_version(tmp_path: Path, mongo_uri: str,
                                          mongo_db_name: str) -> None:
    settings = Settings(mongodb_uri=mongo_uri, mongodb_db=mongo_db_name, data_dir=tmp_path)
    with MongoClient(mongo_uri) as client:
        store = MongoServingStore(client[mongo_db_name])
        write_payload_version(store.db, make_payload("m1"))
        store.activate("m1")
        try:
            health = check_health(settings, min_free_gb=0)
        finally:
            client.drop_database(mongo_db_name)
    assert health.ok, health.to_dict()
    assert "active version m1" in health.checks[0].detail


@pytest.mark.integration
def test_snapshots_of_models_published_and_online_versions_are_kept(
        tmp_path: Path, mongo_uri: str, mongo_db_name: str) -> None:
    """A snapshot stays while a saved model, a published version or the online store uses it;
    the counts come from the settings (one default each)."""
    settings = Settings(mongodb_uri=mongo_uri, mongodb_db=mongo_db_name, data_dir=tmp_path,
                        feature_keep_snapshots=1, keep_models=1)
    for day in range(1, 6):
        _snapshot(settings.features_dir, f"s{day}", f"2024-01-0{day}T00:00:00")
    _model(settings.models_dir, "m1", "2024-01-01T00:00:00", "s1")
    with MongoClient(mongo_uri) as client:
        db = client[mongo_db_name]
        # published in MongoDB only (its model directory is gone): s2
        write_payload_version(db, dataclasses.replace(
            make_payload("v2"), metadata={"feature_snapshot": "s2"}))
        # being materialized online: s3
        online_versions(db).begin("s3", {"collections": {}})
        try:
            assert protected_snapshots(settings) == {"s1", "s2", "s3"}
            removed = prune_all(settings)
        finally:
            client.drop_database(mongo_db_name)
    assert removed["models"] == []
    assert removed["snapshots"] == ["s4"]  # s5 is the newest
    assert [m.snapshot_id for m in list_manifests(settings.features_dir)] == [
        "s1", "s2", "s3", "s5"]


def test_unreachable_mongo_deletes_no_snapshot(tmp_path: Path) -> None:
    """References that cannot be read stop the snapshot pruning before anything is deleted."""
    settings = Settings(mongodb_uri="mongodb://127.0.0.1:1", mongodb_timeout_ms=200,
                        data_dir=tmp_path, feature_keep_snapshots=1)
    for day in range(1, 4):
        _snapshot(settings.features_dir, f"s{day}", f"2024-01-0{day}T00:00:00")
    with pytest.raises(FeatureStoreError, match="no snapshot was deleted"):
        protected_snapshots(settings)
    assert len(list_manifests(settings.features_dir)) == 3


@pytest.mark.integration
def test_health_reports_each_failure(tmp_path: Path, mongo_uri: str, mongo_db_name: str) -> None:
    settings = Settings(mongodb_uri=mongo_uri, mongodb_db=mongo_db_name, data_dir=tmp_path)
    report = check_health(settings, api_url="http://127.0.0.1:9", min_free_gb=1e9)
    assert not report.ok
    failed = {check.name: check.detail for check in report.failed}
    assert set(failed) == {"mongodb", "disk", "api-health", "api-ready"}
    assert "no active model version" in failed["mongodb"]
