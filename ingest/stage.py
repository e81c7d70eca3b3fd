"""The pipeline's validate stage as one plain function (the flow wraps it in a task)."""

from __future__ import annotations

import json
import logging
import os
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any, NoReturn

import pandas as pd

from ingest.quarantine import quarantine_batch
from ingest.reader import (
    DATASETS,
    Batch,
    TableChunks,
    arrow_table,
    fixed_arrow_types,
    normalize_batch,
    normalize_frame,
    read_batch,
    write_batch_parquet,
)
from ingest.validate import ValidationReport, split_invalid_rows, validate_batch
from recsys.errors import InputFileError, ValidationFailed
from recsys.settings import Settings

log = logging.getLogger(__name__)

ReportCallback = Callable[[ValidationReport], None]


def ingest_batch(
    input_dir: Path,
    *,
    run_id: str,
    settings: Settings,
    on_report: ReportCallback | None = None,
    now: pd.Timestamp | None = None,
) -> tuple[dict[str, Path], ValidationReport]:
    """Read and validate a batch; write it as normalized parquet under `raw/<run_id>/`.

    Every run writes ``validation/<run_id>/`` (`Settings.validation_dir`): ``report.json``,
    ``report.md``, GE Data Docs in ``data-docs/`` (``report.data_docs`` is its index), and under
    a ``drop`` policy the dropped rows in ``dropped/<dataset>.<csv|parquet>``.

    An interactions file of more than ``settings.validate_chunk_rows`` rows is streamed: read,
    validated (one merged report, see `validate_batch`), normalized and appended to its parquet
    file chunk by chunk, in a staging folder ``raw/.<run_id>.partial`` that is moved into place
    only if the batch passes (and removed otherwise). Users and items are always read whole.

    A batch that cannot be read or fails its contract is *moved* intact to
    `quarantine/<run_id>/` with a report, and the error (InputFileError or ValidationFailed)
    is raised; nothing is written under `raw/`, so features, models and serving are untouched.

    Args:
        input_dir: the batch directory.
        run_id: names the raw, validation and quarantine folders of this run.
        settings: paths, contract policies and bounds, the chunk size.
        on_report: called with the report before returning or raising (pass or fail), e.g. to
            publish it as a Prefect artifact (`ValidationReport.to_markdown`).
        now: the clock for the future-timestamp rule (default: now, UTC).

    Returns:
        The normalized parquet files (``{"users"|"items"|"interactions": path}``) and the report.

    Raises:
        InputFileError: the batch could not be read (quarantined when the folder exists).
        ValidationFailed: the batch broke its contract (always quarantined).
    """
    input_dir = Path(input_dir)
    run_dir = settings.validation_dir / run_id
    try:
        batch = read_batch(input_dir, chunk_rows=settings.validate_chunk_rows)
    except InputFileError as error:
        _reject_unreadable(error, input_dir, run_id=run_id, settings=settings,
                           on_report=on_report)

    writers = {dataset: _ChunkWriter(dataset, batch.frame(dataset), chunks,
                                     staging=settings.raw_dir / f".{run_id}.partial")
               for dataset, chunks in batch.chunked.items()}
    try:
        report = validate_batch(
            batch,
            expectations_dir=settings.expectations_dir,
            known_user_ids=_known_ids(settings, "users"),
            known_item_ids=_known_ids(settings, "items"),
            settings=settings,
            docs_dir=run_dir / "data-docs" if settings.validation_data_docs else None,
            now=now,
            on_chunk=(lambda dataset, kept, dropped: writers[dataset].write(kept, dropped))
            if writers else None,
        )
    except InputFileError as error:  # a chunked file broke part-way
        _discard(writers)
        _reject_unreadable(error, input_dir, run_id=run_id, settings=settings,
                           on_report=on_report)
    except BaseException:
        _discard(writers)
        raise
    if not report.success:
        _discard(writers)
        quarantined = quarantine_batch(batch, quarantine_root=settings.quarantine_dir,
                                       run_id=run_id, report=report)
        _write_reports(run_dir, report)
        _notify(on_report, report)
        raise ValidationFailed(report.failures, quarantine_dir=quarantined)

    try:
        if report.invalid_index:
            batch, dropped = split_invalid_rows(batch, report)
            for dataset, frame in dropped.items():
                path = _write_dropped(frame, batch, dataset, run_dir / "dropped")
                report.dropped[dataset]["file"] = str(path)
                log.warning("dropped %d invalid %s rows (kept in %s)", len(frame), dataset,
                            path)
        written = write_batch_parquet(normalize_batch(batch), settings.raw_dir / run_id)
        for dataset, writer in writers.items():
            dropped_dir = run_dir / "dropped" if dataset in report.dropped else None
            written[dataset], aside = writer.commit(settings.raw_dir / run_id, dropped_dir)
            if aside is not None:
                report.dropped[dataset]["file"] = str(aside)
                log.warning("dropped %d invalid %s rows (kept in %s)",
                            report.dropped[dataset]["rows"], dataset, aside)
    except BaseException:
        _discard(writers)
        raise
    raw_files = {dataset: written[dataset] for dataset in DATASETS}
    _write_reports(run_dir, report)
    _notify(on_report, report)
    log.info("batch %s valid: %s", input_dir,
             {name: writers[name].rows if name in writers else len(batch.frame(name))
              for name in DATASETS})
    return raw_files, report


def _reject_unreadable(error: InputFileError, input_dir: Path, *, run_id: str,
                       settings: Settings, on_report: ReportCallback | None) -> NoReturn:
    """Quarantine a batch that could not be read (when its folder exists), then raise."""
    report = ValidationReport.from_input_error(error)
    if not input_dir.is_dir():
        _notify(on_report, report)
        raise error
    quarantined = quarantine_batch(input_dir, quarantine_root=settings.quarantine_dir,
                                   run_id=run_id, report=report)
    _write_reports(settings.validation_dir / run_id, report)
    _notify(on_report, report)
    raise InputFileError(error.path, f"{error.problem} (batch quarantined in {quarantined})",
                         column=error.column, rule=error.rule) from None


def _discard(writers: dict[str, _ChunkWriter]) -> None:
    for writer in writers.values():
        writer.discard()


class _ChunkWriter:
    """Writes one chunked table as validation hands its chunks over (`ChunkCallback`).

    Kept rows are normalized and appended with a `pyarrow.parquet.ParquetWriter` to
    ``<staging>/<dataset>.parquet``, in the schema `write_batch_parquet` gives a whole table
    (fixed columns, then extra input columns with one type over the whole file, found by a
    first pass over them). Dropped rows go to the dropped file as they come (CSV appended,
    parquet as parts joined at the end). Nothing leaves the staging folder before `commit`;
    `discard` removes it.
    """

    def __init__(self, dataset: str, head: pd.DataFrame, chunks: TableChunks, *,
                 staging: Path) -> None:
        self.dataset = dataset
        self.head = head
        self.chunks = chunks
        self.staging = staging
        self.rows = 0
        self._writer: Any = None
        self._schema: Any = None
        self._dropped_parts: list[Path] = []
        self._dropped_csv: Path | None = None

    @property
    def path(self) -> Path:
        return self.staging / f"{self.dataset}.parquet"

    def write(self, kept: pd.DataFrame, dropped: pd.DataFrame) -> None:
        """Append one chunk: its kept rows normalized, its dropped rows as they were read."""
        import pyarrow.parquet as pq

        if self._writer is None:
            if self.staging.exists():
                shutil.rmtree(self.staging)  # left by a crashed run of the same id
            self.staging.mkdir(parents=True)
            self._schema = self._file_schema()
            self._writer = pq.ParquetWriter(self.path, self._schema)
        if len(kept):
            self._writer.write_table(self._to_schema(
                arrow_table(self.dataset, normalize_frame(self.dataset, kept))))
            self.rows += len(kept)
        if len(dropped):
            self._write_dropped(dropped)

    def commit(self, out_dir: Path, dropped_dir: Path | None) -> tuple[Path, Path | None]:
        """Move the file into `out_dir` (and the dropped rows into `dropped_dir`, when the
        batch dropped rows); return both paths."""
        import pyarrow.parquet as pq

        if self._writer is None:  # no chunk had rows: an empty file, as a whole table gives
            self.staging.mkdir(parents=True, exist_ok=True)
            self._schema = self._file_schema()
            self._writer = pq.ParquetWriter(self.path, self._schema)
        self._writer.close()
        out_dir.mkdir(parents=True, exist_ok=True)
        target = out_dir / self.path.name
        os.replace(self.path, target)
        aside = None
        if dropped_dir is not None and (self._dropped_csv or self._dropped_parts):
            dropped_dir.mkdir(parents=True, exist_ok=True)
            aside = self._finish_dropped(dropped_dir)
        shutil.rmtree(self.staging, ignore_errors=True)
        log.info("wrote %s: %d rows to %s (in chunks)", self.dataset, self.rows, target)
        return target, aside

    def discard(self) -> None:
        """Remove everything written so far."""
        if self._writer is not None:
            try:
                self._writer.close()
            except Exception:  # noqa: BLE001 - the file is deleted next
                pass
            self._writer = None
        shutil.rmtree(self.staging, ignore_errors=True)

    def _file_schema(self) -> Any:
        """Fixed columns as `arrow_table` types them; extra columns with the type pyarrow
        gives them over the whole file (chunks may differ: ints in one, floats in another)."""
        import pyarrow as pa

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

    def _write_dropped(self, dropped: pd.DataFrame) -> None:
        if self.chunks.path.suffix != ".parquet":  # CSV in, CSV aside: appended
            first = self._dropped_csv is None
            self._dropped_csv = self.staging / f"{self.dataset}.dropped.csv"
            dropped.to_csv(self._dropped_csv, mode="w" if first else "a", header=first,
                           index=False)
            return
        import pyarrow.parquet as pq

        part = self.staging / f"{self.dataset}.dropped.{len(self._dropped_parts):05d}.parquet"
        pq.write_table(_dropped_table(dropped), part)
        self._dropped_parts.append(part)

    def _finish_dropped(self, folder: Path) -> Path:
        if self._dropped_csv is not None:
            target = folder / f"{self.dataset}.csv"
            os.replace(self._dropped_csv, target)
            return target
        import pyarrow.parquet as pq

        schema = _unify_schemas([pq.read_schema(p) for p in self._dropped_parts])
        target = folder / f"{self.dataset}.parquet"
        tmp = target.with_suffix(".parquet.tmp")
        with pq.ParquetWriter(tmp, schema) as writer:
            for part in self._dropped_parts:
                writer.write_table(pq.read_table(part).select(schema.names).cast(schema))
        tmp.replace(target)
        return target


def _frame_schema(frame: pd.DataFrame) -> Any:
    import pyarrow as pa

    schema = _dropped_table(frame.iloc[:0] if frame.empty else frame).schema
    return pa.schema([pa.field(f.name, pa.string()) if pa.types.is_large_string(f.type) else f
                      for f in schema])


def _unify_schemas(schemas: list[Any]) -> Any:
    """One schema for tables written apart: types widened where pyarrow can (null -> any,
    int -> float); a column whose types cannot meet is stored as text."""
    import pyarrow as pa

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


def _known_ids(settings: Settings, dataset: str) -> set[str]:
    """Ids of `dataset` ingested by earlier batches (the feature store's raw store)."""
    from features.raw_store import known_ids

    return set(map(str, known_ids(settings.store_dir, dataset)))


def _notify(callback: ReportCallback | None, report: ValidationReport) -> None:
    if callback is not None:
        callback(report)


def _write_reports(run_dir: Path, report: ValidationReport) -> None:
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "report.json").write_text(
        json.dumps(report.to_dict(), indent=2, ensure_ascii=False), encoding="utf-8")
    (run_dir / "report.md").write_text(report.to_markdown(), encoding="utf-8")


def _write_dropped(frame: pd.DataFrame, batch: Batch, dataset: str, folder: Path) -> Path:
    """Dropped rows in the format of their input file (CSV or parquet), raw values kept."""
    folder.mkdir(parents=True, exist_ok=True)
    source = batch.sources.get(dataset)
    if source is not None and source.suffix == ".parquet":
        import pyarrow.parquet as pq

        path = folder / f"{dataset}.parquet"
        pq.write_table(_dropped_table(frame), path)
        return path
    path = folder / f"{dataset}.csv"
    frame.to_csv(path, index=False)
    return path


def _dropped_table(frame: pd.DataFrame) -> Any:
    import pyarrow as pa

    try:
        return pa.Table.from_pandas(frame, preserve_index=False)
    except (pa.ArrowException, TypeError, ValueError):
        # Mixed-type object columns: keep them as text rather than lose the rows.
        return pa.Table.from_pandas(frame.astype({c: "str" for c in frame.columns
                                                  if frame[c].dtype == object}),
                                    preserve_index=False)
