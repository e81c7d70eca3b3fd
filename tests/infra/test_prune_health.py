"""Retention rules and the health check, on a hand-made data dir and a real secantusd-py."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytest
from pymongo import MongoClient

from infra.scripts.health import check_health
from features.snapshot import Manifest, ViewSnapshot
from infra.scripts.prune import prune_all, prune_model_versions, prune_old_files
from recsys.settings import Settings
from serving.store import MongoServingStore
from tests.serving.payloads import make_payload


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
    (models / version).mkdir(parents=True)
    (models / version / "metadata.json").write_text(json.dumps(
        {"created_at": created, "feature_snapshot": snapshot}))


def test_models_keep_newest_and_protected(tmp_path: Path) -> None:
    for day in range(1, 5):
        _model(tmp_path, f"m{day}", f"2024-01-0{day}T00:00:00", f"s{day}")
    (tmp_path / ".m9.partial").mkdir()  # a model being written is never touched
    assert prune_model_versions(tmp_path, keep=1, protect={"m2"}) == ["m1", "m3"]
    assert sorted(p.name for p in tmp_path.iterdir()) == [".m9.partial", "m2", "m4"]
    with pytest.raises(ValueError):
        prune_model_versions(tmp_path, keep=0)


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
        store.publish(make_payload("m1"))
        store.activate("m1")
        try:
            removed = prune_all(settings, keep_snapshots=1, keep_models=1)
            health = check_health(settings, min_free_gb=0)
        finally:
            client.drop_database(mongo_db_name)
    assert removed["models"] == ["m2", "m3"]  # m1 is served, m4 is the newest
    assert removed["snapshots"] == ["s2", "s3"]  # s1 and s4 belong to kept models
    assert health.ok, health.to_dict()
    assert "active version m1" in health.checks[0].detail


@pytest.mark.integration
def test_health_reports_each_failure(tmp_path: Path, mongo_uri: str, mongo_db_name: str) -> None:
    settings = Settings(mongodb_uri=mongo_uri, mongodb_db=mongo_db_name, data_dir=tmp_path)
    report = check_health(settings, api_url="http://127.0.0.1:9", min_free_gb=1e9)
    assert not report.ok
    failed = {check.name: check.detail for check in report.failed}
    assert set(failed) == {"mongodb", "disk", "api-health", "api-ready"}
    assert "no active model version" in failed["mongodb"]
