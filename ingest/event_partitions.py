"""A batch's interactions as the raw store lays them out: one parquet file per UTC event date,
sorted by time, with the count of repeated events found in the same pass.

`write_partitions` is the raw store's writer for interactions (`ingest.raw_store.commit_batch`
calls it on a staging folder of its own; nothing else writes these files). One DuckDB query
sorts the batch by ``(timestamp, k)``, where ``k = hash(user_id, item_id, event_type)``, and
streams it back in order; each date's rows are contiguous in that order and are written to
their own file by a small thread pool while the next rows arrive. The sort key is cheap (two
integers instead of three strings) and deterministic for a given DuckDB version.

The same order makes the marker's ``repeated_events`` (rows repeating an event, i.e. the rows
minus the distinct ``(user_id, item_id, timestamp, event_type)``, nulls equal) a count of
neighbours: every copy of an event has the same ``(timestamp, k)``, so the copies are adjacent
unless another event with that very ``(timestamp, k)`` (a hash collision) lies between them.
Adjacent rows with equal ``(timestamp, k)`` are compared value by value; when any such pair
differs, the count falls back to an exact ``COUNT(DISTINCT ...)`` query. The count is therefore
exact either way.
"""

from __future__ import annotations

import logging
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

log = logging.getLogger(__name__)

# Rows per row group, as DuckDB writes them: an as-of build can skip most of a cut-off day.
ROW_GROUP_ROWS = 122_880
_STREAM_ROWS = 1_000_000
_WRITERS = 2
_EVENT_COLUMNS = ("user_id", "item_id", "event_type")
# The tie-break of the sort: equal events get equal keys (a test swaps it for a constant).
_KEY_SQL = "hash(user_id, item_id, {event_type})"


def write_partitions(con: duckdb.DuckDBPyConnection, source: str, folder: Path,
                     *, has_event_type: bool) -> int:
    """Write the interactions of `source` as ``folder/date=YYYY-MM-DD/part_0.parquet``.

    Args:
        con: a DuckDB connection in UTC (`ingest.raw_store.connect`).
        source: the SQL literal of the normalized interactions file (``timestamp`` in UTC).
        folder: where the date folders go (created).
        has_event_type: whether the file has an ``event_type`` column (absent: all null).

    Returns:
        Rows repeating an event of the file (exact, see the module docstring).
    """
    event_type = "event_type" if has_event_type else "NULL"
    # The key and the UTC date come first so the file's own columns follow them unchanged,
    # whatever their names; the date is DuckDB's, right for any timestamp unit.
    reader = con.sql(
        f"SELECT {_KEY_SQL.format(event_type=event_type)} AS k, "
        f"CAST(\"timestamp\" AS DATE) AS d, * FROM read_parquet({source}) "
        "ORDER BY \"timestamp\", k").to_arrow_reader(_STREAM_ROWS)
    repeats = _Repeats(has_event_type)
    with ThreadPoolExecutor(max_workers=_WRITERS) as pool:
        pending: list[Future[None]] = []
        day: int | None = None
        parts: list[pa.RecordBatch] = []
        for batch in reader:
            key = batch.column(0).to_numpy()
            days = batch.column(1).cast(pa.int32()).to_numpy()  # days since 1970-01-01
            rows = pa.RecordBatch.from_arrays(batch.columns[2:],
                                              schema=pa.schema(list(batch.schema)[2:]))
            # in the file's own unit: events differing below a microsecond stay distinct
            stamps = rows.column("timestamp").cast(pa.int64()).to_numpy()
            repeats.add(stamps, key, rows)
            cuts = [0, *(np.flatnonzero(days[1:] != days[:-1]) + 1).tolist(), len(days)]
            for start, end in zip(cuts, cuts[1:]):
                if day is not None and days[start] != day:
                    pending.append(pool.submit(_write_day, folder, day, parts))
                    parts = []
                    _wait_some(pending)
                day = int(days[start])
                parts.append(rows.slice(start, end - start))
        if parts and day is not None:
            pending.append(pool.submit(_write_day, folder, day, parts))
        for future in pending:
            future.result()
    if repeats.collided:
        log.info("hash collision among adjacent events: counting repeats with DISTINCT")
        return _distinct_repeats(con, source, event_type)
    return repeats.count


def _wait_some(pending: list[Future[None]]) -> None:
    """Bound the rows held for writing: wait for the oldest writes when many are queued."""
    while len(pending) > 2 * _WRITERS:
        pending.pop(0).result()


def _write_day(folder: Path, day: int, parts: list[pa.RecordBatch]) -> None:
    target = folder / f"date={np.datetime64(day, 'D')}"
    target.mkdir(parents=True, exist_ok=True)
    table = pa.Table.from_batches(parts)
    # Ids and times in plain encoding: with a day's many distinct values a dictionary makes
    # the file larger and slower to write; the few event types in a dictionary, as DuckDB does.
    pq.write_table(table, target / "part_0.parquet", compression="zstd",
                   use_dictionary=[c for c in ("event_type",) if c in table.column_names],
                   row_group_size=ROW_GROUP_ROWS)


def _distinct_repeats(con: duckdb.DuckDBPyConnection, source: str, event_type: str) -> int:
    row = con.execute(
        f"SELECT COUNT(*) - (SELECT COUNT(*) FROM (SELECT DISTINCT user_id, item_id, "
        f"\"timestamp\", {event_type} FROM read_parquet({source}))) FROM read_parquet({source})"
    ).fetchone()
    return int(row[0]) if row else 0


class _Repeats:
    """Counts adjacent equal events over the sorted stream (the last row carries over)."""

    def __init__(self, has_event_type: bool) -> None:
        self.columns = _EVENT_COLUMNS if has_event_type else _EVENT_COLUMNS[:2]
        self.count = 0
        self.collided = False
        self._last: tuple[np.ndarray, np.ndarray, pa.Table] | None = None

    def add(self, stamps: np.ndarray, key: np.ndarray, rows: pa.RecordBatch) -> None:
        """Fold in the next rows of the sorted stream."""
        if not len(stamps):
            return
        values = pa.Table.from_batches([rows.select(list(self.columns))])
        if self._last is not None:  # the previous batch's last row leads this one
            stamps = np.concatenate([self._last[0], stamps])
            key = np.concatenate([self._last[1], key])
            values = pa.concat_tables([self._last[2], values])
        pairs = np.flatnonzero((stamps[1:] == stamps[:-1]) & (key[1:] == key[:-1]))
        if len(pairs):
            same = np.ones(len(pairs), dtype=bool)
            for column in self.columns:
                col = values.column(column)
                same &= _equal(col.take(pa.array(pairs)), col.take(pa.array(pairs + 1)))
            self.count += int(same.sum())
            self.collided = self.collided or not bool(same.all())
        last = len(stamps) - 1
        self._last = (stamps[last:], key[last:], values.slice(last, 1))


def _equal(left: Any, right: Any) -> np.ndarray:
    """Element-wise equality with null equal to null (as DISTINCT compares)."""
    equal = pc.fill_null(pc.equal(left, right), False)
    both_null = pc.and_(pc.is_null(left), pc.is_null(right))
    return pc.or_(equal, both_null).to_numpy(zero_copy_only=False)

