"""Write a validated batch: normalized parquet, whole or chunk by chunk, and dropped rows aside.

`write_batch_parquet` writes whole tables; `ChunkWriter` appends a chunked table
(`Batch.chunked`) as validation hands its chunks over, in the schema a whole table would get.
Both write into the folder they are given: `ingest.stage` gives them the run's folder in the raw
store (`ingest.raw_store.staged_batch`), which `ingest.raw_store.commit_batch` then commits.

Rows dropped under the ``drop`` policy are written as they were read, in the format of their
input file (CSV or parquet), with ``_failed_rules``.
"""

from __future__ import annotations

import logging
import os
import shutil
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.feather as feather
import pyarrow.parquet as pq

from ingest.normalize import normalize_batch
from ingest.reader import DATASETS, Batch, TableChunks

logger = logging.getLogger(__name__)


def write_batch_parquet(batch: Batch, out_dir: Path) -> dict[str, Path]:
    """Write the normalized batch to ``out_dir/{users,items,interactions}.parquet``.

    `batch` should come from `normalize_batch` (it is normalized again here, which is a no-op on
    normalized frames). Interactions use a fixed schema: ``user_id string, item_id string,
    timestamp timestamp[us, tz=UTC], rating double, weight double, event_type string``, followed
    by any extra input columns (`arrow_table`). Chunked tables (`Batch.chunked`) are skipped:
    their writer appends them chunk by chunk.

    Returns:
        ``{"users": path, "items": path, "interactions": path}`` (chunked tables left out).
    """
    batch = normalize_batch(batch)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths: dict[str, Path] = {}
    for dataset in DATASETS:
        if dataset in batch.chunked:
            continue
        table = arrow_table(dataset, batch.frame(dataset))
        path = out_dir / f"{dataset}.parquet"
        tmp = path.with_suffix(".parquet.tmp")
        pq.write_table(table, tmp)
        tmp.replace(path)
        paths[dataset] = path
        logger.info("wrote %s: %d rows to %s", dataset, table.num_rows, path)
    return paths


def fixed_arrow_types(dataset: str) -> dict[str, Any]:
    """The columns every written table of `dataset` starts with, and their arrow types."""
    string = pa.string()
    return {
        "users": {"user_id": string},
        "items": {"item_id": string, "title": string, "genres": pa.list_(string)},
        "interactions": {
            "user_id": string,
            "item_id": string,
            "timestamp": pa.timestamp("us", tz="UTC"),
            "rating": pa.float64(),
            "weight": pa.float64(),
            "event_type": string,
        },
    }[dataset]


def arrow_table(dataset: str, frame: pd.DataFrame) -> Any:
    """A normalized frame of `dataset` as an arrow table: its fixed columns
    (`fixed_arrow_types`) first, then any extra input columns as pyarrow converts them."""
    fixed = fixed_arrow_types(dataset)
    arrays, fields = [], []
    for column, type_ in fixed.items():
        values = frame[column]
        if pa.types.is_string(type_):
            # str() of every non-null value (normalized frames hold plain strings already).
            text = values if _is_plain_str(values) else values.astype("str")
            array = pa.array(text, from_pandas=True)
            array = array.cast(type_) if array.type != type_ else array
        else:
            array = pa.array(values, type=type_, from_pandas=True)
        arrays.append(array)
        fields.append(pa.field(column, type_))
    extra = [c for c in frame.columns if c not in fixed]
    if extra:
        rest = pa.Table.from_pandas(frame[extra], preserve_index=False)
        for name, col in zip(rest.column_names, rest.columns, strict=True):
            if pa.types.is_large_string(col.type):  # pandas 3 "str" -> large_string
                col = col.cast(pa.string())
            arrays.append(col)
            fields.append(pa.field(name, col.type))
    return pa.Table.from_arrays(arrays, schema=pa.schema(fields))


def _is_plain_str(series: pd.Series) -> bool:
    return (pd.api.types.is_string_dtype(series.dtype)
            and not pd.api.types.is_object_dtype(series.dtype))


class ChunkWriter:
    """Writes one chunked table as validation hands its chunks over (`ChunkCallback`).

    Each chunk's kept rows come normalized in an Arrow IPC file of their own (written by the part
    that validated them, `ingest.validation_part`) and are appended with a
    `pyarrow.parquet.ParquetWriter` to
    ``<folder>/<dataset>.parquet``, in the schema `write_batch_parquet` gives a whole table
    (fixed columns, then extra input columns with one type over the whole file, found by a
    first pass over them). Dropped rows come in files too (CSV appended to one file, parquet
    parts joined at the end); `finish` moves them to the run's
    dropped-rows folder. `discard` removes everything this writer wrote.
    """

    def __init__(self, dataset: str, head: pd.DataFrame, chunks: TableChunks, *,
                 folder: Path) -> None:
        self.dataset = dataset
        self.head = head
        self.chunks = chunks
        self.folder = folder
        self.rows = 0
        self._writer: Any = None
        self._schema: Any = None
        self._dropped_parts: list[Path] = []
        self._dropped_csv: Path | None = None

    @property
    def path(self) -> Path:
        """The table's parquet file."""
        return self.folder / f"{self.dataset}.parquet"

    def append(self, kept: Path | None, dropped: Path | None) -> None:
        """Append one validated chunk: its kept rows (a normalized Arrow IPC file, cast here to
        the file's schema) and its dropped rows (as read, CSV without header or parquet)."""
        self._open()
        if kept is not None:
            table = self._to_schema(feather.read_table(kept, memory_map=False))
            self._writer.write_table(table)
            self.rows += table.num_rows
        if dropped is None:
            return
        if Path(dropped).suffix == ".csv":  # CSV in, CSV aside: appended under one header
            first = self._dropped_csv is None
            self._dropped_csv = self.folder / f"{self.dataset}.dropped.csv"
            with self._dropped_csv.open("w" if first else "a", encoding="utf-8") as out:
                if first:
                    out.write(pd.DataFrame(columns=[*self.head.columns, "_failed_rules"])
                              .to_csv(index=False))
                with Path(dropped).open(encoding="utf-8") as part:
                    shutil.copyfileobj(part, out)
            return
        self._dropped_parts.append(Path(dropped))

    def finish(self, dropped_dir: Path | None) -> tuple[Path, Path | None]:
        """Close the parquet file; move the dropped rows into `dropped_dir` (when the batch
        dropped rows). Returns the parquet file and the dropped-rows file (or None)."""
        self._open()  # no chunk had rows: an empty file, as a whole table gives
        self._writer.close()
        self._writer = None
        aside = None
        if dropped_dir is not None and (self._dropped_csv or self._dropped_parts):
            dropped_dir.mkdir(parents=True, exist_ok=True)
            aside = self._finish_dropped(dropped_dir)
        logger.info("wrote %s: %d rows to %s (in chunks)", self.dataset, self.rows, self.path)
        return self.path, aside

    def discard(self) -> None:
        """Remove everything written so far."""
        if self._writer is not None:
            try:
                self._writer.close()
            except Exception:  # noqa: BLE001 - the file is deleted next
                pass
            self._writer = None
        for path in (self.path, self._dropped_csv, *self._dropped_parts):
            if path is not None:
                path.unlink(missing_ok=True)

    def _open(self) -> None:
        if self._writer is None:
            self.folder.mkdir(parents=True, exist_ok=True)
            self._schema = self._file_schema()
            self._writer = pq.ParquetWriter(self.path, self._schema)

    def _file_schema(self) -> Any:
        """Fixed columns as `arrow_table` types them; extra columns with the type pyarrow
        gives them over the whole file (chunks may differ: ints in one, floats in another)."""
        fixed = fixed_arrow_types(self.dataset)
        fields = [pa.field(name, type_) for name, type_ in fixed.items()]
        extra = [c for c in self.head.columns if c not in fixed]
        if extra:
            schemas = [_frame_schema(chunk[extra]) for chunk in self.chunks.iter_columns(extra)]
            fields += list(_unify_schemas(schemas or [_frame_schema(self.head[extra])]))
        return pa.schema(fields)

    def _to_schema(self, table: Any) -> Any:
        if table.schema.equals(self._schema):
            return table
        return table.select(self._schema.names).cast(self._schema)

    def _finish_dropped(self, folder: Path) -> Path:
        if self._dropped_csv is not None:
            target = folder / f"{self.dataset}.csv"
            os.replace(self._dropped_csv, target)
            return target
        schema = _unify_schemas([pq.read_schema(p) for p in self._dropped_parts])
        target = folder / f"{self.dataset}.parquet"
        tmp = target.with_suffix(".parquet.tmp")
        with pq.ParquetWriter(tmp, schema) as writer:
            for part in self._dropped_parts:
                writer.write_table(pq.read_table(part).select(schema.names).cast(schema))
        tmp.replace(target)
        for part in self._dropped_parts:
            part.unlink()
        return target


def write_dropped(frame: pd.DataFrame, batch: Batch, dataset: str, folder: Path) -> Path:
    """Dropped rows in the format of their input file (CSV or parquet), raw values kept."""
    folder.mkdir(parents=True, exist_ok=True)
    source = batch.sources.get(dataset)
    if source is not None and source.suffix == ".parquet":
        path = folder / f"{dataset}.parquet"
        pq.write_table(dropped_table(frame), path)
        return path
    path = folder / f"{dataset}.csv"
    frame.to_csv(path, index=False)
    return path


def _frame_schema(frame: pd.DataFrame) -> Any:
    schema = dropped_table(frame.iloc[:0] if frame.empty else frame).schema
    return pa.schema([pa.field(f.name, pa.string()) if pa.types.is_large_string(f.type) else f
                      for f in schema])


def _unify_schemas(schemas: list[Any]) -> Any:
    """One schema for tables written apart: types widened where pyarrow can (null -> any,
    int -> float); a column whose types cannot meet is stored as text."""
    fields = []
    for name in schemas[0].names:
        types = [s.field(name).type for s in schemas if name in s.names]
        try:
            unified = pa.unify_schemas([pa.schema([pa.field(name, t)]) for t in types],
                                       promote_options="permissive").field(name)
        except (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError):
            unified = pa.field(name, pa.string())
        fields.append(unified)
    return pa.schema(fields)


def dropped_table(frame: pd.DataFrame) -> Any:
    """Dropped rows as an arrow table, values as read (mixed-type columns as text)."""
    try:
        return pa.Table.from_pandas(frame, preserve_index=False)
    except (pa.ArrowException, TypeError, ValueError):
        # Mixed-type object columns: keep them as text rather than lose the rows.
        return pa.Table.from_pandas(frame.astype({c: "str" for c in frame.columns
                                                  if frame[c].dtype == object}),
                                    preserve_index=False)
