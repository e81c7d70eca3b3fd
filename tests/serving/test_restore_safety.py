"""Regression (issue 13): a restore verifies the whole backup before it touches the target.

Before the fix, restoring a backup with one truncated `.bson.gz` dropped the target collection,
inserted the first 1,000 of 2,600 documents and died with an `EOFError` traceback.
"""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pytest
from pymongo import MongoClient
from typer.testing import CliRunner

from recsys.errors import BackupError
from serving.backup import BACKUP_FILE, backup_database, restore_database
from serving.cli import ops_app
from serving.store import MongoServingStore
from serving.version_writer import write_payload_version
from tests.serving.payloads import make_payload

pytestmark = pytest.mark.integration

N_BIG = 2600


@pytest.fixture
def source(mongo_uri: str, mongo_db_name: str):
    """A served v1 whose `recs_v1` holds 2,600 documents (three insert batches of 1,000)."""
    with MongoClient(mongo_uri) as client:
        store = MongoServingStore(client[mongo_db_name])
        write_payload_version(store.db, make_payload("v1", n_users=N_BIG, top_n=3))
        store.activate("v1")
    yield mongo_db_name
    with MongoClient(mongo_uri) as client:
        client.drop_database(mongo_db_name)


def _snapshot(uri: str, db: str) -> dict[str, list]:
    with MongoClient(uri) as client:
        database = client[db]
        return {name: list(database[name].find({}).sort("_id", 1))
                for name in sorted(database.list_collection_names())}


def _truncate(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def _backup(uri: str, db: str, root: Path) -> Path:
    return Path(backup_database(uri, db, root, method="python").path)


def test_backup_records_a_hash_and_count_for_every_file(mongo_uri: str, source: str,
                                                        tmp_path: Path) -> None:
    backup = _backup(mongo_uri, source, tmp_path)
    meta = json.loads((backup / BACKUP_FILE).read_text())
    on_disk = sorted(str(p.relative_to(backup)) for p in (backup / source).iterdir())
    assert sorted(meta["files"]) == on_disk
    assert all(len(entry["sha256"]) == 64 for entry in meta["files"].values())
    assert meta["files"][f"{source}/recs_v1.bson.gz"]["documents"] == N_BIG


def test_truncated_file_is_refused_before_the_target_is_touched(mongo_uri: str, source: str,
                                                               tmp_path: Path) -> None:
    backup = _backup(mongo_uri, source, tmp_path)
    _truncate(backup / source / "recs_v1.bson.gz")
    before = _snapshot(mongo_uri, source)

    with pytest.raises(BackupError) as caught:
        restore_database(backup, mongo_uri, method="python")

    message = str(caught.value)
    assert "\n" not in message
    assert "recs_v1.bson.gz" in message and "sha256" in message
    after = _snapshot(mongo_uri, source)
    assert len(after["recs_v1"]) == N_BIG
    assert after == before  # nothing dropped, nothing staged left behind


def test_old_backup_without_hashes_is_verified_by_reading(mongo_uri: str, source: str,
                                                         tmp_path: Path) -> None:
    backup = _backup(mongo_uri, source, tmp_path)
    meta_file = backup / BACKUP_FILE
    meta = json.loads(meta_file.read_text())
    meta.pop("files", None)  # as written before hashes were recorded
    meta_file.write_text(json.dumps(meta))
    before = _snapshot(mongo_uri, source)

    restored = restore_database(backup, mongo_uri, method="python")  # intact: restores
    assert restored.collections["recs_v1"] == N_BIG

    _truncate(backup / source / "recs_v1.bson.gz")
    with pytest.raises(BackupError, match=r"recs_v1\.bson\.gz.*(truncated|corrupt)"):
        restore_database(backup, mongo_uri, method="python")
    assert _snapshot(mongo_uri, source) == before


def test_count_mismatch_is_refused_before_the_target_is_touched(mongo_uri: str, source: str,
                                                               tmp_path: Path) -> None:
    backup = _backup(mongo_uri, source, tmp_path)
    meta_file = backup / BACKUP_FILE
    meta = json.loads(meta_file.read_text())
    meta["collections"]["recs_v1"] = N_BIG + 1
    meta.pop("files", None)
    meta_file.write_text(json.dumps(meta))
    before = _snapshot(mongo_uri, source)
    with pytest.raises(BackupError, match=r"recs_v1\.bson\.gz.*2600 documents.*2601"):
        restore_database(backup, mongo_uri, method="python")
    assert _snapshot(mongo_uri, source) == before


def test_missing_file_is_refused(mongo_uri: str, source: str, tmp_path: Path) -> None:
    backup = _backup(mongo_uri, source, tmp_path)
    (backup / source / "similar_v1.bson.gz").unlink()
    with pytest.raises(BackupError, match=r"similar_v1\.bson\.gz.*missing"):
        restore_database(backup, mongo_uri, method="python")


def test_restore_replaces_changed_collections_and_leaves_no_staging(
    mongo_uri: str, source: str, tmp_path: Path
) -> None:
    backup = _backup(mongo_uri, source, tmp_path)
    original = _snapshot(mongo_uri, source)
    with MongoClient(mongo_uri) as client:
        db = client[source]
        db["recs_v1"].delete_many({"_id": {"$in": ["u1", "u2"]}})
        db["recs_v1"].insert_one({"_id": "stray"})
        db["not_in_backup"].insert_one({"_id": 1})
    restore_database(backup, mongo_uri, method="python")
    after = _snapshot(mongo_uri, source)
    assert after.pop("not_in_backup") == [{"_id": 1}]  # collections it did not back up stay
    assert after == original


def test_no_drop_refuses_to_merge_into_a_non_empty_collection(mongo_uri: str, source: str,
                                                              tmp_path: Path) -> None:
    backup = _backup(mongo_uri, source, tmp_path)
    before = _snapshot(mongo_uri, source)
    with pytest.raises(BackupError, match="exists"):
        restore_database(backup, mongo_uri, method="python", drop=False)
    assert _snapshot(mongo_uri, source) == before


def test_cli_restore_reports_one_line_without_traceback(
    mongo_uri: str, source: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    backup = _backup(mongo_uri, source, tmp_path)
    path = backup / source / "recs_v1.bson.gz"
    with gzip.open(path, "rb") as fh:
        data = fh.read()
    with gzip.open(path, "wb") as fh:
        fh.write(data[:-7])  # a well-formed gzip whose last document is cut short
    monkeypatch.setenv("MONGODB_URI", mongo_uri)
    monkeypatch.setenv("MONGODB_DB", source)
    monkeypatch.setenv("RECSYS_DATA_DIR", str(tmp_path))
    result = CliRunner().invoke(ops_app, ["restore", str(backup), "--method", "python"])
    assert result.exit_code == 1
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.output
    assert "recs_v1.bson.gz" in lines[0] and "Traceback" not in result.output
    assert len(_snapshot(mongo_uri, source)["recs_v1"]) == N_BIG
