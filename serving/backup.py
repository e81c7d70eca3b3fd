"""MongoDB backup and restore of the serving database (the owner of `<data_dir>/backups/`).

Two methods produce and read the same layout, so either tool can restore either backup::

    <backup_root>/<db>-<UTC timestamp>/
        <db>/<collection>.bson.gz            concatenated BSON documents, gzip (mongodump --gzip)
        <db>/<collection>.metadata.json.gz   {"indexes": [...]} as mongodump writes it
        backup.json                          method, database, per-collection document counts,
                                             created_at, and per file its sha256, size and (for
                                             data files) document count

- ``mongodump``/``mongorestore`` (MongoDB Database Tools) when both are on PATH;
- otherwise a pure-Python fallback with pymongo: documents are streamed as raw BSON
  (`RawBSONDocument`, never decoded, so float32 vectors and datetimes round-trip byte for byte)
  and restored in batches with `insert_many`; secondary indexes are recreated from the metadata.

A restore never touches the target before the whole backup is known to be good:

1. every file is checked against `backup.json` (its sha256; a backup written before hashes were
   recorded is read through instead, and its document counts compared), a missing or unlisted
   file is refused;
2. each collection is restored into a staging collection ``restore.<token>.<name>`` of the target
   database, and every staging copy's count is checked;
3. only then each staging collection replaces its target with ``renameCollection`` (dropTarget).

The swap is one rename per collection, not one atomic step: for the few milliseconds between the
first and the last rename a reader can see some collections from the backup and others from
before, and a rename with dropTarget ends cursors open on the collection it replaces. Versioned
collections are renamed first and the pointer collections (`serving_state`, `feature_state`)
last, so a pointer never names a version whose collections have not arrived. Stop the API and
the flows for a restore when that window matters. A restore killed mid-way leaves only staging
collections behind; the next restore drops them.

CLI (`serving/cli.py`)::

    recsys ops backup  [--out DIR] [--method auto|tools|python]
    recsys ops restore BACKUP_DIR [--db NAME] [--method ...] [--no-drop]
"""

from __future__ import annotations

import gzip
import json
import logging
import secrets
import shutil
import subprocess
import time
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Literal

from bson.raw_bson import RawBSONDocument
from pymongo import MongoClient
from pymongo.database import Database
from pymongo.errors import PyMongoError

from recsys.errors import BackupError
from recsys.mongo import (
    BATCH_CONNECT_TIMEOUT_MS,
    FEATURE_SNAPSHOTS,
    FEATURE_STATE,
    MODEL_VERSIONS,
    SERVING_STATE,
)
from recsys.settings import Settings
from serving.backup_files import (
    BACKUP_FILE,
    DATA_SUFFIX,
    METADATA_SUFFIX,
    RAW_OPTIONS,
    UNREADABLE,
    collection_of,
    describe_files,
    raw_documents,
    read_manifest,
    verify_backup,
)

log = logging.getLogger(__name__)

Method = Literal["auto", "tools", "python"]
STAGING_PREFIX = "restore."
"""Staging collections of a restore are named ``restore.<token>.<collection>``."""

# Renamed last, in this order: registries, then the pointers that name entries of them.
_SWAP_LAST = (MODEL_VERSIONS, FEATURE_SNAPSHOTS, FEATURE_STATE, SERVING_STATE)


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
    # a generous connect (heartbeat) timeout, as for every batch client (recsys.mongo.client_for)
    return MongoClient(uri, serverSelectionTimeoutMS=timeout_ms,
                       connectTimeoutMS=max(timeout_ms, BATCH_CONNECT_TIMEOUT_MS))


# ------------------------------------------------------------------ backup

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
        The backup's folder, method and per-collection document counts (as written to the
        files; `backup.json` also records each file's sha256 and size).
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
        else:
            with _client(uri, timeout_ms) as client:
                counts = _dump_python(client.get_database(database, codec_options=RAW_OPTIONS),
                                      tmp / database, batch_size)
        files = describe_files(tmp, database, counts)
    except subprocess.CalledProcessError as error:
        shutil.rmtree(tmp, ignore_errors=True)
        raise BackupError(f"mongodump failed for database {database}: {error.stderr.strip()}"
                          ) from error
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    counts = {collection_of(rel): entry["documents"] for rel, entry in files.items()
              if "documents" in entry}
    seconds = (datetime.now(UTC) - started).total_seconds()
    result = BackupResult(path=str(target), database=database, method=chosen,
                          collections=dict(sorted(counts.items())), seconds=seconds)
    (tmp / BACKUP_FILE).write_text(json.dumps(
        {**result.to_dict(), "created_at": started.isoformat(), "files": files}, indent=2))
    tmp.rename(target)  # a backup folder only appears once complete
    log.info("backed up %s (%d collections, %d documents) to %s with %s in %.1fs", database,
             len(counts), sum(counts.values()), target, chosen, seconds)
    return result


def _dump_python(db: Database, out: Path, batch_size: int) -> dict[str, int]:
    counts: dict[str, int] = {}
    for name in sorted(db.list_collection_names()):
        collection = db[name]
        written = 0
        with gzip.open(out / f"{name}{DATA_SUFFIX}", "wb") as fh:
            for doc in collection.find({}, batch_size=batch_size).sort("_id", 1):
                fh.write(doc.raw)
                written += 1
        indexes = [{k: v for k, v in info.items() if k != "ns"}
                   for info in collection.list_indexes()]
        with gzip.open(out / f"{name}{METADATA_SUFFIX}", "wt") as fh:
            json.dump({"indexes": [_plain(ix) for ix in indexes]}, fh)
        counts[name] = written
    return counts


def _plain(value: object) -> object:
    """Index info (SON, int64...) as plain JSON types."""
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if isinstance(value, int | float | str | bool) or value is None:
        return value
    return str(value)


# ------------------------------------------------------------------ restore

def restore_database(backup_dir: Path, uri: str, database: str | None = None, *,
                     method: Method = "auto", drop: bool = True, timeout_ms: int = 5000,
                     batch_size: int = 1000) -> BackupResult:
    """Restore a backup made by `backup_database`: verify, stage, then swap (module docstring).

    Args:
        backup_dir: the backup's folder (holds `backup.json` and `<db>/`).
        uri: MongoDB connection string.
        database: target database (default: the one backed up).
        method: as for `backup_database`.
        drop: replace collections that exist in the target; with False a restore refuses (before
            writing anything) when a collection of the backup exists there with documents.

    Returns:
        The per-collection counts restored.

    Raises:
        BackupError: one line: the folder is not a backup, a file is missing, truncated or
            changed, a collection exists (drop=False), or loading or swapping failed. The
            target is untouched unless the message says the swap was interrupted.
    """
    started = datetime.now(UTC)
    backup_dir = Path(backup_dir)
    expected = verify_backup(backup_dir)
    source_db = read_manifest(backup_dir)["database"]
    target_db = database or source_db
    chosen = _pick(method)
    staging = f"{STAGING_PREFIX}{secrets.token_hex(4)}."
    try:
        with _client(uri, timeout_ms) as client:
            db = client[target_db]
            _drop_leftover_staging(db)
            if not drop:
                _refuse_existing(db, expected)
            try:
                if chosen == "tools":
                    _load_with_tools(backup_dir, uri, source_db, target_db, staging)
                else:
                    _load_with_python(db, backup_dir / source_db, expected, staging, batch_size)
                _check_staging(db, expected, staging)
                _swap(client, target_db, expected, staging)
            finally:
                _drop_staging(db, staging)
            restored = {name: db[name].count_documents({}) for name in expected}
    except PyMongoError as error:
        raise BackupError(f"restore of {backup_dir} into {target_db} failed: "
                          f"{type(error).__name__}: {error}") from error
    seconds = (datetime.now(UTC) - started).total_seconds()
    log.info("restored %s into %s (%d documents) with %s in %.1fs", backup_dir, target_db,
             sum(restored.values()), chosen, seconds)
    return BackupResult(path=str(backup_dir), database=target_db, method=chosen,
                        collections=restored, seconds=seconds)


def _drop_staging(db: Database, staging: str) -> None:
    try:
        for name in db.list_collection_names():
            if name.startswith(staging):
                db.drop_collection(name)
    except PyMongoError as error:  # the error that got us here matters more
        log.warning("could not drop the staging collections %s*: %s", staging, error)


def _drop_leftover_staging(db: Database) -> None:
    for name in db.list_collection_names():
        if name.startswith(STAGING_PREFIX):
            log.warning("dropping %s.%s, left by an interrupted restore", db.name, name)
            db.drop_collection(name)


def _refuse_existing(db: Database, expected: dict[str, int]) -> None:
    for name in sorted(set(db.list_collection_names()) & set(expected)):
        if db[name].find_one({}, {"_id": 1}) is not None:
            raise BackupError(f"collection {name} exists in {db.name} with documents; restore "
                              "without --no-drop to replace it (nothing was restored)")


def _load_with_tools(backup_dir: Path, uri: str, source_db: str, target_db: str,
                     staging: str) -> None:
    command = ["mongorestore", f"--uri={uri}", "--gzip", f"--nsInclude={source_db}.*",
               f"--nsFrom={source_db}.*", f"--nsTo={target_db}.{staging}*",
               f"--dir={backup_dir}"]
    try:
        subprocess.run(command, check=True, capture_output=True, text=True)
    except subprocess.CalledProcessError as error:
        stderr = " ".join(error.stderr.split())
        raise BackupError(f"mongorestore failed from {backup_dir} (nothing was replaced): "
                          f"{stderr}") from error


def _load_with_python(db: Database, data_dir: Path, expected: dict[str, int], staging: str,
                      batch_size: int) -> None:
    for name in sorted(expected):
        data_file = data_dir / f"{name}{DATA_SUFFIX}"
        collection = db[staging + name]
        db.create_collection(collection.name)
        batch: list[RawBSONDocument] = []
        try:
            for doc in raw_documents(data_file):
                batch.append(doc)
                if len(batch) >= batch_size:
                    collection.insert_many(batch, ordered=False)
                    batch = []
        except UNREADABLE as error:
            raise BackupError(f"{data_file} became unreadable during the restore (nothing was "
                              f"replaced): {type(error).__name__}: {error}") from error
        if batch:
            collection.insert_many(batch, ordered=False)
        _restore_indexes(collection.database, collection.name,
                         data_dir / f"{name}{METADATA_SUFFIX}")


def _check_staging(db: Database, expected: dict[str, int], staging: str) -> None:
    for name, count in sorted(expected.items()):
        got = db[staging + name].count_documents({})
        if got != count:
            raise BackupError(f"restoring {name} gave {got} documents, the backup has {count} "
                              "(nothing was replaced)")


def _swap(client: MongoClient, target_db: str, expected: dict[str, int], staging: str) -> None:
    order = sorted(expected, key=lambda n: (n in _SWAP_LAST,
                                            _SWAP_LAST.index(n) if n in _SWAP_LAST else 0, n))
    for done, name in enumerate(order):
        try:
            client.admin.command("renameCollection", f"{target_db}.{staging}{name}",
                                 to=f"{target_db}.{name}", dropTarget=True)
        except PyMongoError as error:
            raise BackupError(
                f"swap into {target_db} interrupted at {name} after {done} of {len(order)} "
                f"collections ({type(error).__name__}: {error}); rerun the restore") from error


def _restore_indexes(db: Database, name: str, metadata_file: Path) -> None:
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
        db[name].create_index(keys, **options)


# ------------------------------------------------------------------ retention

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
