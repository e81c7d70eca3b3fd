"""The one publish path: `publish_model` and the three ways users reach it (`recsys models
promote`, `recsys models rollback`, `POST /admin/active-version`), against a real secantusd-py
server and a real model registry (two small trained and scored models on two snapshots)."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest
from asgi_lifespan import LifespanManager
from pymongo.database import Database
from typer.testing import CliRunner

from features.online import is_materialized, online_snapshot, switch_online
from features.snapshot import build_snapshot
from recsys.errors import NotFound, PublishError
from recsys.mongo import MODEL_VERSIONS, recs_collection
from recsys.settings import Settings
from serving import store as store_module
from serving.api.main import create_app
from serving.lock import PublishLock
from serving.publish import ALREADY_ACTIVE, publish_model, rollback_model
from serving.store import MongoServingStore
from serving.version_writer import write_payload_version
from tests.features.conftest import random_batch
from tests.serving.payloads import make_payload
from training.cli import models_app
from training.stage import score_run_model, train_run_model

pytestmark = pytest.mark.integration

ADMIN = "admin-key"
MODEL_SETTINGS = {"top_n": 5, "similar_n": 3, "popular_n": 5, "eval_k": 3, "explain_n": 0,
                  "factors": 2, "regularization": 0.1, "alpha": 5.0, "iterations": 3, "seed": 3}


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A data dir with snapshots s1, s2 and models v1 (trained on s1), v2 (on s2), scored."""
    root = tmp_path_factory.mktemp("data")
    settings = Settings(data_dir=root, **MODEL_SETTINGS)
    start, end = datetime(2024, 1, 1, tzinfo=UTC), datetime(2024, 3, 1, tzinfo=UTC)
    for n, (snapshot, version) in enumerate((("s1", "v1"), ("s2", "v2")), start=1):
        raw = random_batch(root / "raw" / snapshot, seed=n, n=400, start=start, end=end)
        manifest = build_snapshot(raw, features_root=settings.features_dir,
                                  snapshot_id=snapshot)
        model_dir, _ = train_run_model(manifest, version=version, settings=settings)
        score_run_model(model_dir, manifest, settings=settings)
    return root


@pytest.fixture
def settings(data_dir: Path, mongo_uri: str, db_name: str) -> Settings:
    return Settings(mongodb_uri=mongo_uri, mongodb_db=db_name, data_dir=data_dir,
                    keep_versions=2, feature_online_keep=1, publish_lock_timeout_s=1,
                    api_log_json=False, api_rate_limit_per_second=0, admin_api_keys=ADMIN,
                    active_poll_seconds=0.05, **MODEL_SETTINGS)


@pytest.fixture
def held(db: Database) -> Iterator[PublishLock]:
    """The publish lock, held by "another publish" until the test releases it."""
    lock = PublishLock(db, ttl_s=5, timeout_s=1, holder="another publish")
    lock.acquire()
    yield lock
    lock.release()


def _state(db: Database) -> tuple[str | None, str | None]:
    """(served model version, online feature snapshot)."""
    return MongoServingStore(db).active_version(), online_snapshot(db)


# --------------------------------------------------------------------------- publish_model

def test_publish_writes_from_the_registry_switches_features_and_rolls_back(
    settings: Settings, db: Database
) -> None:
    first = publish_model(settings, "v1")
    assert (first.version, first.previous_version, first.skipped) == ("v1", None, None)
    assert first.written and first.counts["users"] == 30
    assert (first.feature_snapshot, first.online_switched, first.online_written) == \
        ("s1", True, True)
    assert _state(db) == ("v1", "s1")
    # item attributes of the model's snapshot are denormalised into the lists
    doc = db[recs_collection("v1")].find_one({})
    assert "genres" in doc["items"][0]
    assert db[MODEL_VERSIONS].find_one({"_id": "v1"})["features"]["item_attributes"] == \
        ["genres"]

    second = publish_model(settings, "v2")
    assert (second.previous_version, second.online_previous) == ("v1", "s1")
    assert _state(db) == ("v2", "s2")
    # feature_online_keep=1, but s1 belongs to the kept version v1: it stays materialized
    assert second.dropped_snapshots == [] and is_materialized(db, "s1")

    again = publish_model(settings, "v2")
    assert again.skipped == ALREADY_ACTIVE and not again.written
    assert again.previous_version == "v1" and _state(db) == ("v2", "s2")

    back = rollback_model(settings)
    assert (back.version, back.previous_version) == ("v1", "v2")
    assert not back.written and not back.online_written  # both were kept: only switched
    assert _state(db) == ("v1", "s1")
    assert back.to_dict()["active_version"] == "v1"


def test_prune_drops_old_versions_and_their_snapshots(settings: Settings, db: Database) -> None:
    publish_model(settings, "v1")
    assert publish_model(settings, "v2").dropped_versions == []  # v1 is the rollback target
    # a third version (no feature snapshot of its own): keep_versions=2 keeps it and v2
    write_payload_version(db, make_payload("v3"))
    result = publish_model(settings, "v3")
    assert result.previous_version == "v2"
    assert result.dropped_versions == ["v1"] and result.dropped_snapshots == ["s1"]
    assert not is_materialized(db, "s1") and _state(db) == ("v3", "s2")
    # a rollback target that was pruned is written again from the registry
    assert publish_model(settings, "v1").written and _state(db) == ("v1", "s1")


def test_keep_versions_below_two_is_refused() -> None:
    with pytest.raises(ValueError, match="keep_versions"):
        Settings(keep_versions=1)


def test_first_publish_whose_model_switch_fails_leaves_no_online_pointer(
    settings: Settings, db: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken_activate(self: MongoServingStore, version: str) -> str | None:
        raise PublishError("injected failure of the model switch")

    monkeypatch.setattr(MongoServingStore, "activate", broken_activate)
    with pytest.raises(PublishError, match="injected"):
        publish_model(settings, "v1")
    assert online_snapshot(db) is None  # features never ahead of the (absent) model


def test_a_publish_decided_against_another_champion_is_superseded(
    settings: Settings, db: Database
) -> None:
    publish_model(settings, "v1")
    publish_model(settings, "v2")  # e.g. an operator promoted v2 while a run was gating
    result = publish_model(settings, "v1", expected_active="v1")
    assert result.superseded and "changed from v1 to v2" in result.superseded
    assert _state(db) == ("v2", "s2") and result.version == "v2"


def test_rollback_reads_its_target_under_the_lock(settings: Settings, db: Database) -> None:
    publish_model(settings, "v1")
    publish_model(settings, "v2")
    lock = PublishLock(db, ttl_s=30, timeout_s=1, holder="a publish of v1 in progress")
    lock.acquire()
    done: list[str] = []
    waiter = threading.Thread(target=lambda: done.append(
        rollback_model(settings.model_copy(update={"publish_lock_timeout_s": 30})).version))
    waiter.start()
    time.sleep(1.0)
    # the publish holding the lock switches to v1; the rollback queued behind it undoes that
    MongoServingStore(db).activate("v1")
    lock.release()
    waiter.join(timeout=60)
    assert done == ["v2"] and _state(db)[0] == "v2"


def test_a_snapshot_gone_everywhere_still_switches_the_model(
    settings: Settings, db: Database, caplog: pytest.LogCaptureFixture
) -> None:
    publish_model(settings, "v1")
    payload = make_payload("v3")
    payload.metadata["feature_snapshot"] = "gone"
    write_payload_version(db, payload)
    with caplog.at_level(logging.WARNING, logger="serving.publish"):
        result = publish_model(settings, "v3")
    assert result.version == "v3" and result.feature_snapshot == "gone"
    assert not result.online_switched and result.online_previous is None
    assert _state(db) == ("v3", "s1")  # the online features stay as they were
    assert "feature snapshot gone of model version v3 is neither online nor on disk" \
        in caplog.text


def test_a_failed_model_switch_puts_the_online_pointer_back(
    settings: Settings, db: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    publish_model(settings, "v1")

    def refuse(self: MongoServingStore, version: str) -> str | None:
        raise PublishError(f"injected: cannot activate {version}")

    monkeypatch.setattr(store_module.MongoServingStore, "activate", refuse)
    with pytest.raises(PublishError, match="injected"):
        publish_model(settings, "v2")
    assert _state(db) == ("v1", "s1")
    assert is_materialized(db, "s2")  # written for the attempt; the next one only switches


def test_unknown_version_and_leftovers_of_a_crash(settings: Settings, db: Database) -> None:
    with pytest.raises(NotFound, match="'v9' is neither in MongoDB nor in"):
        publish_model(settings, "v9")
    assert _state(db) == (None, None)
    with pytest.raises(PublishError, match="no previous version"):
        rollback_model(settings)
    db[MODEL_VERSIONS].insert_one({"_id": "crashed", "status": "building"})
    db[recs_collection("crashed")].insert_one({"_id": "u0"})
    publish_model(settings, "v1")
    assert db[MODEL_VERSIONS].find_one({"_id": "crashed"})["status"] == "abandoned"
    assert recs_collection("crashed") not in db.list_collection_names()


# --------------------------------------------------------------------------- the entry points

@pytest.fixture
def cli_env(settings: Settings, monkeypatch: pytest.MonkeyPatch) -> CliRunner:
    for name, value in {"MONGODB_URI": settings.mongodb_uri, "MONGODB_DB": settings.mongodb_db,
                        "RECSYS_DATA_DIR": str(settings.data_dir),
                        "RECSYS_PUBLISH_LOCK_TIMEOUT_S": "1", "RECSYS_KEEP_VERSIONS": "2",
                        "RECSYS_FEATURE_ONLINE_KEEP": "1"}.items():
        monkeypatch.setenv(name, value)
    return CliRunner()


def test_models_promote_waits_for_the_lock_and_switches_the_features(
    settings: Settings, db: Database, cli_env: CliRunner, held: PublishLock
) -> None:
    # the lock is held by "another publish": promote waits, gives up, changes nothing
    refused = cli_env.invoke(models_app, ["promote", "v1"])
    assert refused.exit_code == 1
    assert "waiting for the publish lock, held by another publish" in refused.output
    assert _state(db) == (None, None)
    held.release()
    promoted = cli_env.invoke(models_app, ["promote", "v1"])
    assert promoted.exit_code == 0, promoted.output
    assert "published and active: v1" in promoted.output
    assert _state(db) == ("v1", "s1")

    # with a longer timeout, promote waits for the holder and then goes ahead
    held.acquire()
    outcome: dict[str, object] = {}

    def promote() -> None:
        outcome["result"] = cli_env.invoke(models_app, ["promote", "v2"],
                                           env={"RECSYS_PUBLISH_LOCK_TIMEOUT_S": "30"})

    worker = threading.Thread(target=promote)
    worker.start()
    time.sleep(1.5)
    assert worker.is_alive() and _state(db) == ("v1", "s1")  # still waiting
    held.release()
    worker.join(60)
    result = outcome["result"]
    assert result.exit_code == 0, result.output  # type: ignore[attr-defined]
    assert _state(db) == ("v2", "s2")


def test_models_rollback_holds_the_lock_and_switches_the_features(
    settings: Settings, db: Database, cli_env: CliRunner
) -> None:
    publish_model(settings, "v1")
    publish_model(settings, "v2")
    with PublishLock(db, ttl_s=5, timeout_s=1, holder="another publish"):
        refused = cli_env.invoke(models_app, ["rollback"])
        assert refused.exit_code == 1 and "held by another publish" in refused.output
        assert _state(db) == ("v2", "s2")
    rolled = cli_env.invoke(models_app, ["rollback"])
    assert rolled.exit_code == 0, rolled.output
    assert "active: v1 (was: v2)" in rolled.output and "snapshot s1" in rolled.output
    assert _state(db) == ("v1", "s1")


@pytest.mark.anyio
async def test_admin_switch_holds_the_lock_and_switches_the_features(
    settings: Settings, db: Database
) -> None:
    publish_model(settings, "v2")
    publish_model(settings, "v1")
    app = create_app(settings)
    async with LifespanManager(app) as manager:
        transport = httpx.ASGITransport(app=manager.app)
        async with httpx.AsyncClient(transport=transport, base_url="http://t",
                                     headers={"X-API-Key": ADMIN}) as client:
            with PublishLock(db, ttl_s=5, timeout_s=1, holder="another publish"):
                busy = await client.post("/admin/active-version", json={"version": "v2"})
                assert busy.status_code == 409
                assert "held by another publish" in busy.json()["detail"]
                assert _state(db) == ("v1", "s1")
            # the API never writes a version: one MongoDB lacks is a 404 naming the command
            absent = await client.post("/admin/active-version", json={"version": "v9"})
            assert absent.status_code == 404
            assert "recsys models promote v9" in absent.json()["detail"]
            r = await client.post("/admin/active-version", json={"version": "v2"})
            assert r.status_code == 200, r.text
            assert r.json() == {"active_version": "v2", "previous_version": "v1"}
            assert _state(db) == ("v2", "s2")
            body = (await client.get("/users/u000/recommendations")).json()
            assert body["model_version"] == "v2"  # this process serves it at once
