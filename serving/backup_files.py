"""The layout of a backup folder: its files, `backup.json`, and checking one before a restore.

`serving/backup.py` writes and restores backups; this module knows what a complete backup looks
like (see that module's docstring for the layout) and proves a folder is one.
"""

from __future__ import annotations

import gzip
import json
import logging
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import bson
from bson.codec_options import CodecOptions
from bson.raw_bson import RawBSONDocument

from recsys.errors import BackupError
from recsys.hashing import file_sha256

log = logging.getLogger(__name__)

BACKUP_FILE = "backup.json"
DATA_SUFFIX = ".bson.gz"
METADATA_SUFFIX = ".metadata.json.gz"
RAW_OPTIONS: CodecOptions = CodecOptions(document_class=RawBSONDocument)
UNREADABLE = (OSError, EOFError, zlib.error, bson.InvalidBSON, ValueError)
"""What reading a truncated or corrupt `.bson.gz` / `.metadata.json.gz` raises."""


def raw_documents(path: Path) -> Iterator[RawBSONDocument]:
    """The documents of a `.bson.gz`, undecoded (so they round-trip byte for byte)."""
    with gzip.open(path, "rb") as fh:
        yield from bson.decode_file_iter(fh, codec_options=RAW_OPTIONS)


def count_documents(path: Path) -> int:
    """Documents in a `.bson.gz`, read to the end (raises on a truncated or corrupt file)."""
    return sum(1 for _ in raw_documents(path))


def describe_files(root: Path, database: str, counts: dict[str, int]) -> dict[str, Any]:
    """`backup.json`'s "files": sha256 and size of every file, document count of data files
    (known from writing them, else counted by reading, as for mongodump's output)."""
    files: dict[str, Any] = {}
    for path in sorted(p for p in (root / database).rglob("*") if p.is_file()):
        rel = path.relative_to(root).as_posix()
        entry: dict[str, Any] = {"sha256": file_sha256(path), "bytes": path.stat().st_size}
        if path.name.endswith(DATA_SUFFIX):
            name = collection_of(rel)
            entry["documents"] = counts[name] if name in counts else count_documents(path)
        files[rel] = entry
    return files


def collection_of(rel: str) -> str:
    """The collection a data file holds: `<db>/<name>.bson.gz` -> `<name>`."""
    return rel.rsplit("/", 1)[-1].removesuffix(DATA_SUFFIX)


def read_manifest(backup_dir: Path) -> dict[str, Any]:
    """`backup.json` of `backup_dir`, its shape checked (names never lead outside the folder).

    Raises:
        BackupError: the folder has no `backup.json`, or it is unreadable or malformed.
    """
    path = backup_dir / BACKUP_FILE
    if not path.is_file():
        raise BackupError(f"{backup_dir} is not a backup: {BACKUP_FILE} is missing")
    try:
        meta = json.loads(path.read_text())
        database, collections = meta["database"], meta["collections"]
        files = meta.get("files", {})
        names = [database, *collections, *(rel.split("/", 1)[-1] for rel in files)]
        if not all(_safe_name(n) for n in names) or any(
                not rel.startswith(f"{database}/") for rel in files):
            raise ValueError("a database, collection or file name is not a plain name")
        if not all(isinstance(v, int) and v >= 0 for v in collections.values()):
            raise ValueError("document counts must be non-negative integers")
        if not all(isinstance(e, dict) for e in files.values()):
            raise ValueError("'files' entries must be objects")
    except (ValueError, KeyError, TypeError, AttributeError, UnicodeDecodeError) as error:
        raise BackupError(f"{path} is unreadable or malformed: {type(error).__name__}: "
                          f"{error}") from None
    return meta


def _safe_name(name: object) -> bool:
    return (isinstance(name, str) and name not in ("", ".", "..") and "/" not in name
            and "\\" not in name and "\0" not in name)


def verify_backup(backup_dir: Path) -> dict[str, int]:
    """Check a backup against its `backup.json` without touching any database.

    Every listed file must be present with its recorded sha256; a backup written before hashes
    were recorded is read through instead (every document decoded, the counts compared).

    Returns:
        collection -> expected document count.

    Raises:
        BackupError: one line naming the (first) bad file and what is wrong with it.
    """
    backup_dir = Path(backup_dir)
    meta = read_manifest(backup_dir)
    source = meta["database"]
    expected: dict[str, int] = dict(meta["collections"])
    present = {p.relative_to(backup_dir).as_posix()
               for p in (backup_dir / source).glob("*") if p.is_file()}
    listed = {f"{source}/{name}{DATA_SUFFIX}" for name in expected}
    problems = [f"{rel}: missing" for rel in sorted(listed - present)]
    problems += [f"{rel}: not listed in {BACKUP_FILE}" for rel in sorted(present)
                 if rel.endswith(DATA_SUFFIX) and rel not in listed]
    files: dict[str, Any] | None = meta.get("files")
    if files is not None:
        for rel, entry in sorted(files.items()):
            path = backup_dir / rel
            if not path.is_file():
                if rel not in listed:  # listed data files are reported above
                    problems.append(f"{rel}: missing")
                continue
            try:
                digest = file_sha256(path)
            except OSError as error:
                problems.append(f"{rel}: unreadable ({error})")
                continue
            if digest != entry.get("sha256"):
                problems.append(
                    f"{rel}: sha256 differs from {BACKUP_FILE} ({path.stat().st_size} bytes, "
                    f"{entry.get('bytes')} recorded): the file is truncated or changed")
    else:
        for name, count in sorted(expected.items()):
            rel = f"{source}/{name}{DATA_SUFFIX}"
            if rel in present:
                problems.extend(_read_through(backup_dir / rel, rel, count))
    if problems:
        more = ""
        if len(problems) > 1:  # the error names the first; the log lists them all
            for problem in problems:
                log.warning("backup %s: %s", backup_dir, problem)
            more = f" (and {len(problems) - 1} more problems, listed in the log)"
        raise BackupError(f"backup {backup_dir} is unusable, nothing was restored: "
                          f"{problems[0]}{more}")
    return expected


def _read_through(path: Path, rel: str, count: int) -> list[str]:
    try:
        found = count_documents(path)
        metadata = path.with_name(path.name.removesuffix(DATA_SUFFIX) + METADATA_SUFFIX)
        if metadata.is_file():
            with gzip.open(metadata, "rt") as fh:
                json.load(fh)
    except UNREADABLE as error:
        return [f"{rel}: truncated or corrupt ({type(error).__name__}: {error})"]
    if found != count:
        return [f"{rel} holds {found} documents, {BACKUP_FILE} says {count}"]
    return []
