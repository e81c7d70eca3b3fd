"""MongoDB backup and restore of the serving database (the owner of `<data_dir>/backups/`).

Two methods produce and read the same layout, so either tool can restore either backup::

    <backup_root>/<db>-<UTC timestamp>/
        <db>/<collection>.bson.gz            concatenated BSON documents, gzip (mongodump --gzip)
        <db>/<collection>.metadata.json.gz   {"indexes": [...]} as mongodump writes it
        backup.json                          method, database, per-collection counts, created_at

- ``mongodump``/``mongorestore`` (MongoDB Database Tools) when both are on PATH;
- otherwise a pure-Python fallback with pymongo: documents are streamed as raw BSON
  (`RawBSONDocument`, never decoded, so float32 vectors and datetimes round-trip byte for byte)
  and restored in batches with `insert_many`; secondary indexes are recreated from the metadata.

CLI (`serving/cli.py`)::

    recsys ops backup  [--out DIR] [--method auto|tools|python]
    recsys ops restore BACKUP_DIR [--db NAME] [--method ...] [--no-drop]
"""

from __future__ import annotations

import gzip
import json
import logging
import shutil
import subprocess
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Literal

import bson
from bson.codec_options import CodecOptions
from bson.raw_bson import RawBSONDocument
from pymongo import MongoClient

from recsys.errors import BackupError
from recsys.settings import Settings

log = logging.getLogger(__name__)

Method = Literal["auto", "tools", "python"]
BACKUP_FILE = "backup.json"
RAW_OPTIONS: CodecOptions = CodecOptions(document_class=RawBSONDocument)


@dataclass(frozen=True)
class BackupResult:
    """What a backup or restore did."""

    path: str
    database: str
    method: str
    collections: dict[str, int] = field(default_factory=dict)
    seconds: float = 0.0

    def to_dict(self) -> dict[str, object]:
        """JSON-friendly form (for artifacts and `backup.json`)."""
        return asdict(self)


def tools_available() -> bool:
    """True when both mongodump and mongorestore are on PATH."""
    return bool(shutil.which("mongodump") and shutil.which("mongorestore"))


def _pick(method: Method) -> Literal["tools", "python"]:
    if method == "tools" and not tools_available():
        raise BackupError("method 'tools' requested but mongodump/mongorestore are not on PATH")
    if method == "auto":
        return "tools" if tools_available() else "python"
    return method


def _client(uri: str, timeout_ms: int) -> MongoClient:
    return MongoClient(uri, serverSelectionTimeoutMS=timeout_ms, connectTimeoutMS=timeout_ms)


def _raw_documents(path: Path) -> Iterator[RawBSONDocument]:
    with gzip.open(path, "rb") as fh:
        yield from bson.decode_file_iter(fh, codec_options=RAW_OPTIONS)


def _counts_from_metadata(backup_dir: Path) -> dict[str, int]:
    meta = json.loads((backup_dir / BACKUP_FILE).read_text())
    return dict(meta.get("collections", {}))


def backup_database(uri: str, database: str, backup_root: Path, *, method: Method = "auto",
                    timeout_ms: int = 5000, batch_size: int = 1000) -> BackupResult:
    """Back up every collection of `database` into a new folder under `backup_root`.

    Args:
        uri: MongoDB connection string.
        database: database name.
        backup_root: parent folder; the backup goes to `<database>-<timestamp>/` inside it.
        method: "tools" (mongodump), "python" (pymongo fallback) or "auto" (tools when present).
        timeout_ms: server selection/connect timeout.
        batch_size: cursor batch size of the Python method.

    Returns:
        The backup's folder, method and per-collection document counts.
    """
    started = datetime.now(UTC)
    chosen = _pick(method)
    target = Path(backup_root) / f"{database}-{started.strftime('%Y%m%dT%H%M%S%fZ')}"
    tmp = target.with_name(f".{target.name}.partial")
    (tmp / database).mkdir(parents=True)
    counts: dict[str, int] = {}
    try:
        if chosen == "tools":
            subprocess.run(["mongodump", f"--uri={uri}", f"--db={database}", f"--out={tmp}",
                            "--gzip"], check=True, capture_output=True, text=True)
            with _client(uri, timeout_ms) as client:
                db = client[database]
                counts = {name: db[name].estimated_document_count()
                          for name in sorted(db.list_collection_names())}
        else:
            with _client(uri, timeout_ms) as client:
                db = client.get_database(database, codec_options=RAW_OPTIONS)
                for name in sorted(db.list_collection_names()):
                    collection = db[name]
                    written = 0
                    with gzip.open(tmp / database / f"{name}.bson.gz", "wb") as fh:
                        for doc in collection.find({}, batch_size=batch_size).sort("_id", 1):
                            fh.write(doc.raw)
                            written += 1
                    indexes = [{k: v for k, v in info.items() if k != "ns"}
                               for info in collection.list_indexes()]
                    with gzip.open(tmp / database / f"{name}.metadata.json.gz", "wt") as fh:
                        json.dump({"indexes": [_plain(ix) for ix in indexes]}, fh)
                    counts[name] = written
    except subprocess.CalledProcessError as error:
        shutil.rmtree(tmp, ignore_errors=True)
        raise BackupError(f"mongodump failed for database {database}: {error.stderr.strip()}"
                          ) from error
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    seconds = (datetime.now(UTC) - started).total_seconds()
    result = BackupResult(path=str(target), database=database, method=chosen,
                          collections=counts, seconds=seconds)
    (tmp / BACKUP_FILE).write_text(json.dumps(
        {**result.to_dict(), "created_at": started.isoformat()}, indent=2))
    tmp.rename(target)  # a backup folder only appears once complete
    log.info("backed up %s (%d collections, %d documents) to %s with %s in %.1fs", database,
             len(counts), sum(counts.values()), target, chosen, seconds)
    return result


def _plain(value: object) -> object:
    """Index info (SON, int64...) as plain JSON types."""
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if isinstance(value, int | float | str | bool) or value is None:
        return value
    return str(value)


def restore_database(backup_dir: Path, uri: str, database: str | None = None, *,
                     method: Method = "auto", drop: bool = True, timeout_ms: int = 5000,
                     batch_size: int = 1000) -> BackupResult:
    """Restore a backup made by `backup_database` (or `mongodump --gzip --out`).

    Args:
        backup_dir: the backup's folder (holds `backup.json` and `<db>/`).
        uri: MongoDB connection string.
        database: target database (default: the one backed up).
        method: as for `backup_database`.
        drop: drop each collection before restoring it (a clean copy of the backup).

    Returns:
        The per-collection counts restored.

    Raises:
        BackupError: the folder is not a backup, or the restored counts differ from the backup.
    """
    started = datetime.now(UTC)
    backup_dir = Path(backup_dir)
    if not (backup_dir / BACKUP_FILE).is_file():
        raise BackupError(f"{backup_dir} is not a backup: {BACKUP_FILE} is missing")
    meta = json.loads((backup_dir / BACKUP_FILE).read_text())
    source_db = meta["database"]
    target_db = database or source_db
    chosen = _pick(method)
    expected = _counts_from_metadata(backup_dir)
    if chosen == "tools":
        command = ["mongorestore", f"--uri={uri}", "--gzip", f"--nsFrom={source_db}.*",
                   f"--nsTo={target_db}.*", f"--dir={backup_dir}"]
        if drop:
            command.append("--drop")
        try:
            subprocess.run(command, check=True, capture_output=True, text=True)
        except subprocess.CalledProcessError as error:
            raise BackupError(f"mongorestore failed from {backup_dir}: {error.stderr.strip()}"
                              ) from error
    else:
        with _client(uri, timeout_ms) as client:
            db = client[target_db]
            for data_file in sorted((backup_dir / source_db).glob("*.bson.gz")):
                name = data_file.name.removesuffix(".bson.gz")
                if drop:
                    db.drop_collection(name)
                batch: list[RawBSONDocument] = []
                for doc in _raw_documents(data_file):
                    batch.append(doc)
                    if len(batch) >= batch_size:
                        db[name].insert_many(batch, ordered=False)
                        batch = []
                if batch:
                    db[name].insert_many(batch, ordered=False)
                if name not in db.list_collection_names():
                    db.create_collection(name)  # an empty collection in the backup
                _restore_indexes(db, name, data_file.with_name(f"{name}.metadata.json.gz"))
    with _client(uri, timeout_ms) as client:
        db = client[target_db]
        restored = {name: db[name].count_documents({}) for name in expected}
    wrong = {name: (count, restored.get(name)) for name, count in expected.items()
             if restored.get(name) != count}
    if wrong:
        raise BackupError(f"restore of {backup_dir} into {target_db} incomplete "
                          f"(collection: (backed up, restored)): {wrong}")
    seconds = (datetime.now(UTC) - started).total_seconds()
    log.info("restored %s into %s (%d documents) with %s in %.1fs", backup_dir, target_db,
             sum(restored.values()), chosen, seconds)
    return BackupResult(path=str(backup_dir), database=target_db, method=chosen,
                        collections=restored, seconds=seconds)


def _restore_indexes(db: object, name: str, metadata_file: Path) -> None:
    if not metadata_file.is_file():
        return
    with gzip.open(metadata_file, "rt") as fh:
        indexes = json.load(fh).get("indexes", [])
    for index in indexes:
        if index.get("name") == "_id_":
            continue
        keys = list(index["key"].items())
        options = {k: v for k, v in index.items() if k in ("name", "unique", "sparse",
                                                            "expireAfterSeconds")}
        db[name].create_index(keys, **options)  # type: ignore[index]


def list_backups(backup_root: Path) -> list[Path]:
    """Complete backups under `backup_root`, oldest first."""
    root = Path(backup_root)
    if not root.is_dir():
        return []
    return sorted((p for p in root.iterdir() if (p / BACKUP_FILE).is_file()),
                  key=lambda p: json.loads((p / BACKUP_FILE).read_text()).get("created_at", ""))


def prune_backups(backup_root: Path, *, keep: int) -> list[str]:
    """Delete complete backups beyond the newest `keep` (and `.partial` folders over a day old).

    Returns the names of the removed folders.
    """
    if keep < 1:
        raise ValueError("keep must be >= 1")
    backups = list_backups(backup_root)
    removed = [p.name for p in backups[:-keep]]
    for path in backups[:-keep]:
        shutil.rmtree(path, ignore_errors=True)
    root = Path(backup_root)
    if root.is_dir():
        day_ago = time.time() - 86400
        for partial in root.glob(".*.partial"):
            if partial.stat().st_mtime < day_ago:
                shutil.rmtree(partial, ignore_errors=True)
                removed.append(partial.name)
    return removed


def default_backup_root(settings: Settings) -> Path:
    """`<data_dir>/backups`."""
    return Path(settings.data_dir) / "backups"
