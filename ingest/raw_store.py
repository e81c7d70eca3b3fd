"""The raw store: every validated batch, written once, partitioned by event date.

This module is the only reader and writer of `raw_root` (`settings.store_dir`, i.e.
`<data_dir>/store`); `ingest.stage.ingest_batch` writes batches into it, `features/` reads them
through `list_batches`, `store_files` and `known_ids`. Layout::

    interactions/date=YYYY-MM-DD/batch=<batch id>.parquet   # Hive partitions by UTC event date
    users/batch=<batch id>.parquet                           # one file per batch
    items/batch=<batch id>.parquet
    batches/<batch id>.json                                  # commit marker, written last
    _incoming/<run id>/                                      # a run's batch before its commit
    _staging/<batch id>/                                     # a commit in progress

A run writes its validated, normalized batch into a folder of its own (`staged_batch`), and
`commit_batch` turns it into the store's partitions; the run's folder is removed whether the
batch is committed or not, so no copy of a batch outlives its run.

A batch's id is the first 16 hex digits of its content hash (SHA-256 over the SHA-256 of its three
normalized parquet files). The marker is written last, atomically: a batch without a marker is not
part of the store (readers list files from markers, never by globbing), and committing it again
cleans up whatever a crashed attempt left behind. Committing a batch whose marker exists is a
no-op.

Users and items files carry three bookkeeping columns so SQL can apply *latest wins*:
`_batch_id`, `_effective_ts` (the batch's earliest event time, or its ingestion time when it has
no events) and `_seq` (ingestion order, a tie-break). The row of an entity that counts as of a
time T is the one from the visible batch (`_effective_ts <= T`) with the greatest
`(_effective_ts, _seq)` (see `features.snapshot`, which builds that relation).

Interactions are kept as each batch brought them, one file per event date sorted by event
time (`ingest.event_partitions`, which writes them and counts repeated events in the same
pass); batches may overlap. An event is identified
by ``(user_id, item_id, timestamp, event_type)``, and when several batches carry it the batch
with the greatest `seq` (ingested last) wins: `features.snapshot` applies that rule when it reads
the store (`StoredBatch.seq` via `list_batches`), so every snapshot counts an event once. Each
marker records how many of its rows repeat an event of the same batch (`repeated_events`), so
`events_may_repeat` can tell a build when no event can occur twice and grouping is not needed.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import logging
import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import duckdb

from ingest.event_partitions import write_partitions
from ingest.reader import DATASETS
from recsys.hashing import file_sha256
from recsys.ids import check_id

log = logging.getLogger(__name__)

ENTITY_DATASETS = {"users": "user_id", "items": "item_id"}
BATCH_ID_LENGTH = 16
_INCOMING = "_incoming"
_STAGING = "_staging"


@dataclass(frozen=True, kw_only=True)
class StoredBatch:
    """One batch of the raw store, as its commit marker records it.

    Attributes:
        batch_id: first 16 hex digits of `content_hash`; names the batch's files.
        content_hash: SHA-256 over the batch's three normalized parquet files.
        skipped: True when `commit_batch` found the batch already stored (nothing was
            written); always False in `list_batches`.
        seq: the batch's ingestion sequence number (1 for the first batch).
        ingested_at: ISO-8601 UTC time of the first (effective) ingestion.
        effective_ts: ISO-8601 UTC time from which the batch's users/items count.
        rows: rows per dataset.
        dates: event dates (UTC, ISO) of the batch's interaction partitions.
        files: dataset -> store-relative paths of the batch's files.
        source_hashes: dataset -> SHA-256 of the normalized input file.
        min_event_ts, max_event_ts: ISO-8601 UTC times of the batch's first and last event.
        repeated_events: interaction rows repeating an event of this batch (same user, item,
            timestamp and event type); None in markers written before it was recorded.
    """

    batch_id: str
    content_hash: str
    skipped: bool
    seq: int
    ingested_at: str
    effective_ts: str
    rows: dict[str, int]
    dates: list[str]
    files: dict[str, list[str]] = field(default_factory=dict)
    source_hashes: dict[str, str] = field(default_factory=dict)
    min_event_ts: str | None = None
    max_event_ts: str | None = None
    repeated_events: int | None = None

    def to_dict(self) -> dict[str, Any]:
        """The marker document (without `skipped`, which describes one call only)."""
        data = asdict(self)
        data.pop("skipped")
        return data

    @classmethod
    def from_marker(cls, data: dict[str, Any], *, skipped: bool) -> StoredBatch:
        """The batch a marker document describes."""
        return cls(skipped=skipped, **data)


def batch_content_hash(raw_files: dict[str, Path]) -> tuple[str, dict[str, str]]:
    """Content hash of a batch and the SHA-256 of each of its files."""
    _check_raw_files(raw_files)
    per_file = {name: file_sha256(Path(raw_files[name])) for name in DATASETS}
    combined = hashlib.sha256("".join(f"{n}:{per_file[n]}\n" for n in DATASETS).encode())
    return combined.hexdigest(), per_file


def _check_raw_files(raw_files: dict[str, Path]) -> None:
    missing = [name for name in DATASETS if name not in raw_files]
    if missing:
        raise ValueError(f"raw files missing for {missing} (need {list(DATASETS)})")
    for name in DATASETS:
        if not Path(raw_files[name]).is_file():
            raise FileNotFoundError(f"raw {name} file not found: {raw_files[name]}")


def _lit(value: Path | str) -> str:
    return "'" + str(value).replace("'", "''") + "'"


def connect(*, threads: int | None = None, memory_limit: str | None = None
            ) -> duckdb.DuckDBPyConnection:
    """An in-memory DuckDB connection in UTC with insertion order preserved."""
    con = duckdb.connect()
    con.execute("SET TimeZone = 'UTC'")
    con.execute("SET preserve_insertion_order = true")
    if threads is not None:
        con.execute(f"SET threads = {int(threads)}")
    if memory_limit is not None:
        con.execute(f"SET memory_limit = {_lit(memory_limit)}")
    return con


@contextmanager
def _store_lock(raw_root: Path) -> Iterator[None]:
    raw_root.mkdir(parents=True, exist_ok=True)
    with (raw_root / ".lock").open("a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def _marker_path(raw_root: Path, batch_id: str) -> Path:
    return Path(raw_root) / "batches" / f"{batch_id}.json"


def list_batches(raw_root: Path) -> list[StoredBatch]:
    """Every committed batch of the store, in ingestion order."""
    folder = Path(raw_root) / "batches"
    if not folder.is_dir():
        return []
    batches = [StoredBatch.from_marker(json.loads(p.read_text()), skipped=False)
               for p in folder.glob("*.json")]
    return sorted(batches, key=lambda b: b.seq)


@contextmanager
def staged_batch(raw_root: Path, run_id: str) -> Iterator[Path]:
    """A new, empty folder in the store where one run writes its normalized batch.

    The run writes ``users``/``items``/``interactions.parquet`` there (and may keep scratch
    files beside them), then hands the three files to `commit_batch`. The folder,
    ``<raw_root>/_incoming/<run_id>/``, is removed on exit whether the batch was committed or
    not, so a batch that fails validation leaves nothing in the store and a committed batch
    exists once, as the store's partitions.

    Args:
        raw_root: the store's root (`settings.store_dir`).
        run_id: the run writing the batch; one folder per run (a folder left by a crashed run
            of the same id is replaced).

    Yields:
        The folder.

    Raises:
        InvalidId: `run_id` does not follow the id rule (`recsys.ids`).
    """
    check_id(run_id, kind="run id")
    incoming = Path(raw_root) / _INCOMING
    folder = incoming / run_id
    shutil.rmtree(folder, ignore_errors=True)
    for attempt in range(3):
        try:
            folder.mkdir(parents=True)
            break
        except FileNotFoundError:  # another run removed the empty `_incoming` just now
            if attempt == 2:
                raise
    try:
        yield folder
    finally:
        shutil.rmtree(folder, ignore_errors=True)
        _remove_if_empty(incoming)


def _remove_if_empty(folder: Path) -> None:
    try:
        folder.rmdir()
    except OSError:  # not empty (another run's folder) or already gone
        pass


def commit_batch(raw_files: dict[str, Path], *, raw_root: Path) -> StoredBatch:
    """Append one validated, normalized batch to the raw store (idempotent by content hash).

    The batch becomes its date partitions and entity files, and exists once its marker is
    written; on any error, files of this batch that are not committed are removed again.

    Args:
        raw_files: "users", "items", "interactions" -> normalized parquet path (as written by
            `ingest.parquet_writer`, normally into a `staged_batch` folder; interactions with a
            UTC `timestamp`). They are read, never moved or deleted.
        raw_root: the store's root directory (`settings.store_dir`).

    Returns:
        The batch as stored; `skipped` is True when the same content was already in the store.

    Raises:
        ValueError: a dataset is missing from `raw_files`, or interactions lack `timestamp`.
        FileNotFoundError: a raw file does not exist.
    """
    raw_root = Path(raw_root)
    content_hash, source_hashes = batch_content_hash(raw_files)
    batch_id = content_hash[:BATCH_ID_LENGTH]
    with _store_lock(raw_root):
        marker = _marker_path(raw_root, batch_id)
        if marker.exists():
            log.info("batch %s already in the raw store %s: nothing to do", batch_id, raw_root)
            return StoredBatch.from_marker(json.loads(marker.read_text()), skipped=True)
        seq = max((b.seq for b in list_batches(raw_root)), default=0) + 1
        try:
            stored = _write_batch(raw_files, raw_root=raw_root, batch_id=batch_id,
                                  content_hash=content_hash, source_hashes=source_hashes,
                                  seq=seq)
            marker.parent.mkdir(parents=True, exist_ok=True)
            tmp = marker.with_suffix(".json.tmp")
            tmp.write_text(json.dumps(stored.to_dict(), indent=2, sort_keys=True))
            os.replace(tmp, marker)  # the commit point: the batch exists from here on
        except BaseException:
            _remove_uncommitted(raw_root, batch_id)
            raise
        finally:
            _remove_if_empty(raw_root / _STAGING)
    log.info("batch %s committed to %s: %s rows, %d date partition(s)", batch_id, raw_root,
             stored.rows, len(stored.dates))
    return stored


def _remove_uncommitted(raw_root: Path, batch_id: str) -> None:
    """Delete files an unfinished commit of `batch_id` may have left behind (under the lock)."""
    for path in [*raw_root.glob(f"interactions/date=*/batch={batch_id}*.parquet"),
                 *raw_root.glob(f"users/batch={batch_id}.parquet"),
                 *raw_root.glob(f"items/batch={batch_id}.parquet")]:
        path.unlink()
    _marker_path(raw_root, batch_id).with_suffix(".json.tmp").unlink(missing_ok=True)
    shutil.rmtree(raw_root / _STAGING / batch_id, ignore_errors=True)


def _write_batch(raw_files: dict[str, Path], *, raw_root: Path, batch_id: str,
                 content_hash: str, source_hashes: dict[str, str], seq: int) -> StoredBatch:
    _remove_uncommitted(raw_root, batch_id)
    staging = raw_root / _STAGING / batch_id
    staging.mkdir(parents=True)
    ingested_at = datetime.now(UTC)
    con = connect()
    try:
        inter = _lit(raw_files["interactions"])
        columns = {row[0] for row in con.execute(
            f"DESCRIBE SELECT * FROM read_parquet({inter})").fetchall()}
        if "timestamp" not in columns:
            raise ValueError(f"{raw_files['interactions']}: column 'timestamp' missing "
                             "(rule: normalized interactions)")
        ((count, timed, min_ts, max_ts),) = con.execute(
            f"SELECT COUNT(*), COUNT(\"timestamp\"), MIN(\"timestamp\"), MAX(\"timestamp\") "
            f"FROM read_parquet({inter})").fetchall()
        n_inter = int(count)
        if timed != n_inter:
            raise ValueError(f"{raw_files['interactions']}: column 'timestamp' has "
                             f"{n_inter - timed} null value(s) (rule: normalized interactions)")
        effective = min_ts if min_ts is not None else ingested_at
        # Interactions: one file per UTC event date, sorted by time so row-group statistics
        # let an as-of build skip most of the cut-off day; the same pass counts repeats.
        repeated = 0
        if n_inter:
            repeated = write_partitions(con, inter, staging / "interactions",
                                        has_event_type="event_type" in columns)
        for name, key in ENTITY_DATASETS.items():
            out = staging / name
            out.mkdir()
            con.execute(
                f"COPY (SELECT *, {_lit(batch_id)} AS _batch_id, "
                f"CAST({_lit(effective.isoformat())} AS TIMESTAMPTZ) AS _effective_ts, "
                f"CAST({seq} AS BIGINT) AS _seq FROM read_parquet({_lit(raw_files[name])}) "
                f"ORDER BY {key}) TO {_lit(out / 'part_0.parquet')} "
                "(FORMAT parquet, COMPRESSION zstd)")
        rows = {"interactions": n_inter}
        for name in ENTITY_DATASETS:
            count = con.execute(f"SELECT COUNT(*) FROM read_parquet({_lit(raw_files[name])})"
                                ).fetchone()
            rows[name] = int(count[0]) if count else 0
    finally:
        con.close()

    files: dict[str, list[str]] = {name: [] for name in DATASETS}
    dates: list[str] = []
    staged_inter = staging / "interactions"
    for part_dir in sorted(staged_inter.glob("date=*")) if staged_inter.is_dir() else []:
        parts = sorted(part_dir.glob("*.parquet"))
        target_dir = raw_root / "interactions" / part_dir.name
        target_dir.mkdir(parents=True, exist_ok=True)
        for i, part in enumerate(parts):
            suffix = "" if len(parts) == 1 else f"-{i}"
            target = target_dir / f"batch={batch_id}{suffix}.parquet"
            os.replace(part, target)
            files["interactions"].append(str(target.relative_to(raw_root)))
        dates.append(part_dir.name.removeprefix("date="))
    for name in ENTITY_DATASETS:
        target = raw_root / name / f"batch={batch_id}.parquet"
        target.parent.mkdir(parents=True, exist_ok=True)
        os.replace(staging / name / "part_0.parquet", target)
        files[name].append(str(target.relative_to(raw_root)))
    shutil.rmtree(staging, ignore_errors=True)
    return StoredBatch(
        batch_id=batch_id, content_hash=content_hash, skipped=False, seq=seq,
        ingested_at=ingested_at.isoformat(), effective_ts=effective.astimezone(UTC).isoformat(),
        rows=rows, dates=dates, files=files, source_hashes=source_hashes,
        min_event_ts=min_ts.astimezone(UTC).isoformat() if min_ts is not None else None,
        max_event_ts=max_ts.astimezone(UTC).isoformat() if max_ts is not None else None,
        repeated_events=repeated,
    )


def events_may_repeat(batches: list[StoredBatch]) -> bool:
    """Whether an event (user, item, timestamp, event type) can occur more than once among the
    interactions of `batches`: some batch repeats one of its own events (or its marker does
    not say), or the event-time ranges of two batches meet (overlapping batches)."""
    ranges = []
    for batch in batches:
        if batch.min_event_ts is None or batch.max_event_ts is None:
            continue  # no interactions
        if batch.repeated_events != 0:
            return True
        ranges.append((datetime.fromisoformat(batch.min_event_ts),
                       datetime.fromisoformat(batch.max_event_ts)))
    ranges.sort()
    return any(later[0] <= earlier[1] for earlier, later in zip(ranges, ranges[1:]))


def store_files(raw_root: Path, dataset: str, *, batches: list[StoredBatch] | None = None,
                until: date | None = None) -> list[Path]:
    """Absolute paths of a dataset's files over the committed batches, sorted.

    Args:
        raw_root: the store's root.
        dataset: "users", "items" or "interactions".
        batches: the batches to read (default: every committed batch).
        until: for interactions, only partitions dated on or before this UTC date (partition
            pruning done before DuckDB opens a single file).
    """
    if dataset not in DATASETS:
        raise ValueError(f"unknown dataset {dataset!r}; expected one of {list(DATASETS)}")
    batches = list_batches(raw_root) if batches is None else batches
    paths: list[Path] = []
    for batch in batches:
        for rel in batch.files.get(dataset, []):
            if until is not None and dataset == "interactions":
                part = Path(rel).parent.name.removeprefix("date=")
                if date.fromisoformat(part) > until:
                    continue
            paths.append(Path(raw_root) / rel)
    return sorted(paths)


def known_ids(raw_root: Path, dataset: str) -> set[str]:
    """Ids of the users or items already in the store (any committed batch).

    Args:
        raw_root: the store's root (`settings.store_dir`).
        dataset: "users" or "items".

    Returns:
        The distinct `user_id` / `item_id` values; empty when the store is empty.
    """
    if dataset not in ENTITY_DATASETS:
        raise ValueError(f"unknown dataset {dataset!r}; expected 'users' or 'items'")
    paths = store_files(raw_root, dataset)
    if not paths:
        return set()
    key = ENTITY_DATASETS[dataset]
    con = connect()
    try:
        listing = "[" + ", ".join(_lit(p) for p in paths) + "]"
        table = con.sql(f"SELECT DISTINCT {key} FROM read_parquet({listing})").to_arrow_table()
    finally:
        con.close()
    return set(table.column(0).to_pylist())
