"""Backup and restore: publish, back up, drop the database, restore, and the API answers the
same; the `recsys ops` commands."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import httpx
import pytest
from asgi_lifespan import LifespanManager
from pymongo import MongoClient

from recsys.errors import BackupError
from recsys.settings import Settings
from serving.api.main import create_app
from serving.backup import backup_database, list_backups, restore_database, tools_available
from serving.store import MongoServingStore
from serving.version_writer import write_payload_version
from tests.serving.payloads import N_ITEMS, N_USERS, make_payload

pytestmark = pytest.mark.integration

PATHS = [f"/users/u{i}/recommendations?k=5" for i in (0, 7, N_USERS - 1)] + [
    "/users/nobody/recommendations?k=3", f"/items/i{N_ITEMS - 1}/similar?k=4",
    "/users/u3/embedding", "/items/i5/embedding"]


async def _answers(settings: Settings) -> dict[str, object]:
    app = create_app(settings)
    async with LifespanManager(app) as manager:
        transport = httpx.ASGITransport(app=manager.app)
        async with httpx.AsyncClient(transport=transport, base_url="http://api") as client:
            for _ in range(50):  # the active-version cache fills on start-up
                if (await client.get("/ready")).status_code == 200:
                    break
                await asyncio.sleep(0.1)
            out = {}
            for path in PATHS:
                response = await client.get(path)
                out[path] = (response.status_code, response.json())
            return out


@pytest.fixture
def published(mongo_uri: str, mongo_db_name: str) -> Settings:
    settings = Settings(mongodb_uri=mongo_uri, mongodb_db=mongo_db_name, top_n=5, similar_n=5)
    with MongoClient(mongo_uri) as client:
        store = MongoServingStore(client[mongo_db_name])
        for version in ("v1", "v2"):
            write_payload_version(store.db, make_payload(version, seed=int(version[1])))
        store.activate("v1")
        store.activate("v2")  # previous = v1, so the pointer's history is restored too
    yield settings
    with MongoClient(mongo_uri) as client:
        client.drop_database(mongo_db_name)


def test_backup_drop_restore_serves_the_same(published: Settings, tmp_path: Path) -> None:
    before = asyncio.run(_answers(published))
    assert before["/users/u0/recommendations?k=5"][0] == 200
    assert before["/users/u0/recommendations?k=5"][1]["model_version"] == "v2"

    result = backup_database(published.mongodb_uri, published.mongodb_db, tmp_path / "backups",
                             method="python")
    assert result.method == "python"
    assert result.collections["recs_v2"] == N_USERS
    assert result.collections["serving_state"] == 1
    assert list_backups(tmp_path / "backups") == [Path(result.path)]
    meta = json.loads((Path(result.path) / "backup.json").read_text())
    assert meta["collections"] == result.collections

    with MongoClient(published.mongodb_uri) as client:
        client.drop_database(published.mongodb_db)
        assert published.mongodb_db not in client.list_database_names()

    restored = restore_database(Path(result.path), published.mongodb_uri, method="python")
    assert restored.collections == result.collections
    with MongoClient(published.mongodb_uri) as client:
        state = client[published.mongodb_db]["serving_state"].find_one({"_id": "active"})
        indexes = client[published.mongodb_db]["model_versions"].index_information()
    assert (state["version"], state["previous"]) == ("v2", "v1")
    assert len(indexes) >= 2, indexes  # the (status, created_at) index came back

    after = asyncio.run(_answers(published))
    assert after == before


def test_restore_into_another_database(published: Settings, tmp_path: Path) -> None:
    result = backup_database(published.mongodb_uri, published.mongodb_db, tmp_path,
                             method="python")
    other = published.mongodb_db + "_copy"
    try:
        restore_database(Path(result.path), published.mongodb_uri, other, method="python")
        with MongoClient(published.mongodb_uri) as client:
            assert client[other]["recs_v1"].count_documents({}) == N_USERS
            doc = client[other]["user_embeddings_v2"].find_one({"_id": "u1"})
            original = client[published.mongodb_db]["user_embeddings_v2"].find_one({"_id": "u1"})
        assert doc == original  # float32 vectors round-trip byte for byte
    finally:
        with MongoClient(published.mongodb_uri) as client:
            client.drop_database(other)


def test_restore_refuses_a_folder_that_is_not_a_backup(tmp_path: Path) -> None:
    with pytest.raises(BackupError, match="backup.json"):
        restore_database(tmp_path, "mongodb://127.0.0.1:1", method="python")


@pytest.mark.skipif(tools_available(), reason="mongodump is installed here")
def test_tools_method_needs_mongodump(tmp_path: Path) -> None:
    with pytest.raises(BackupError, match="mongodump"):
        backup_database("mongodb://127.0.0.1:1", "x", tmp_path, method="tools")


def test_ops_backup_and_restore_commands(published: Settings, tmp_path: Path,
                                         monkeypatch: pytest.MonkeyPatch) -> None:
    from typer.testing import CliRunner

    from serving.cli import ops_app

    monkeypatch.setenv("MONGODB_URI", published.mongodb_uri)
    monkeypatch.setenv("MONGODB_DB", published.mongodb_db)
    monkeypatch.setenv("RECSYS_DATA_DIR", str(tmp_path))
    runner = CliRunner()
    made = runner.invoke(ops_app, ["backup", "--method", "python"])
    assert made.exit_code == 0, made.output
    backup = json.loads(made.stdout)
    assert Path(backup["path"]).parent == tmp_path / "backups"  # the default root
    assert backup["collections"]["recs_v1"] == N_USERS
    other = published.mongodb_db + "_ops"
    try:
        restored = runner.invoke(ops_app, ["restore", backup["path"], "--db", other,
                                           "--method", "python", "--no-drop"])
        assert restored.exit_code == 0, restored.output
        assert json.loads(restored.stdout)["collections"] == backup["collections"]
    finally:
        with MongoClient(published.mongodb_uri) as client:
            client.drop_database(other)
    missing = runner.invoke(ops_app, ["restore", str(tmp_path / "nope"), "--method", "python"])
    assert missing.exit_code == 1 and "is not a backup" in missing.output
    bad = runner.invoke(ops_app, ["backup", "--method", "rsync"])
    assert bad.exit_code == 2 and "--method must be auto, tools or python" in bad.output
