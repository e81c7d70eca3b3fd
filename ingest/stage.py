"""The pipeline's ingest stage as one plain function (the flow wraps it in a task).

`ingest_batch` reads a batch, validates it, and either quarantines it or writes it, normalized,
into the raw store: once, as the store's partitions, with no other copy left behind.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import NoReturn

import pandas as pd

from ingest.drop_policy import split_invalid_rows
from ingest.quarantine import quarantine_batch
from ingest.raw_store import StoredBatch, commit_batch, known_ids, staged_batch
from ingest.reader import read_batch
from ingest.report import ValidationReport, write_reports
from ingest.validate import validate_batch
from ingest.writer import ChunkWriter, write_batch_parquet, write_dropped
from recsys.errors import InputFileError, ValidationFailed
from recsys.ids import check_id
from recsys.partitions import Mapper, serial_map
from recsys.progress import ProgressCallback
from recsys.settings import Settings

log = logging.getLogger(__name__)

ReportCallback = Callable[[ValidationReport], None]

# The data dir's folders that have an owner (docs/architecture.md): a batch is never read from
# them, so quarantine can never move them. Other folders of the data dir (``data/demo``) may
# hold batches, and so may ``quarantine/<run id>`` (a quarantined batch re-submitted).
OWNED_DATA_FOLDERS = ("store", "quarantine", "validation", "features", "models", "mongo",
                      "backups", "prefect", "runs")


@dataclass(frozen=True)
class IngestResult:
    """What `ingest_batch` did with a valid batch.

    Attributes:
        report: the validation report (also in ``validation/<run id>/report.{json,md}``).
        stored: the batch as the raw store holds it; ``stored.skipped`` is True when the same
            content was stored before (nothing new was written).
    """

    report: ValidationReport
    stored: StoredBatch


def ingest_batch(
    input_dir: Path,
    *,
    run_id: str,
    settings: Settings,
    on_report: ReportCallback | None = None,
    now: pd.Timestamp | None = None,
    progress: ProgressCallback | None = None,
    mapper: Mapper = serial_map,
) -> IngestResult:
    """Read and validate a batch; write it, normalized, into the raw store (`settings.store_dir`).

    Every run writes ``validation/<run_id>/`` (`Settings.validation_dir`): ``report.json``,
    ``report.md``, GE Data Docs in ``data-docs/`` (``report.data_docs`` is its index), and under
    a ``drop`` policy the dropped rows in ``dropped/<dataset>.<csv|parquet>``.

    The normalized parquet files are written into the run's folder inside the store
    (`ingest.raw_store.staged_batch`) and committed from there (`ingest.raw_store.commit_batch`:
    date partitions, idempotent by content hash, under the store's lock); the folder is removed
    afterwards, pass or fail. An interactions file of more than
    ``settings.validate_chunk_rows`` rows is streamed: split into chunks, each validated and
    normalized by one part run through `mapper` (one merged report, see `validate_batch`),
    and the parts' rows appended to its parquet file in file order. Users and items are
    always read whole.

    A batch that cannot be read or fails its contract is *moved* intact to
    `quarantine/<run_id>/` with a report, and the error (InputFileError or ValidationFailed)
    is raised; nothing is written into the store, so features, models and serving are
    untouched.

    Args:
        input_dir: the batch directory.
        run_id: names the validation and quarantine folders of this run.
        settings: paths, contract policies and bounds, the chunk size.
        on_report: called with the report before returning or raising (pass or fail), e.g. to
            publish it as a Prefect artifact (`ValidationReport.to_markdown`).
        now: the clock for the future-timestamp rule (default: now, UTC).
        progress: told how validation advances (`validate_batch`: rows per dataset, once per
            chunk of a streamed table).
        mapper: runs the parts of a streamed table, one per chunk, each validating its chunk
            and writing its rows (`ingest.validation_part.validate_part`: paths in, a small
            summary out): `serial_map` (default) one after another here, a Dask mapper on
            the cluster's workers. The report, Data Docs, quarantine and stored batch are
            the same either way.

    Returns:
        The report and the batch as stored.

    Raises:
        InputFileError: the batch could not be read (quarantined when the folder exists), or
            the input is refused by `check_input_dir` (nothing read, moved or written).
        ValidationFailed: the batch broke its contract (always quarantined).
        InvalidId: `run_id` cannot name the run's folders (nothing read or written).
    """
    check_id(run_id, kind="run id")
    input_dir = Path(input_dir)
    check_input_dir(input_dir, data_dir=settings.data_dir)
    run_dir = settings.validation_dir / run_id
    try:
        batch = read_batch(input_dir, chunk_rows=settings.validate_chunk_rows,
                           max_line_bytes=settings.max_line_bytes)
    except InputFileError as error:
        _reject_unreadable(error, input_dir, run_id=run_id, settings=settings,
                           on_report=on_report)

    with staged_batch(settings.store_dir, run_id) as staging:
        writers = {dataset: ChunkWriter(dataset, batch.frame(dataset), chunks, folder=staging)
                   for dataset, chunks in batch.chunked.items()}
        try:
            report = validate_batch(
                batch,
                expectations_dir=settings.expectations_dir,
                settings=settings,
                known_user_ids=known_ids(settings.store_dir, "users"),
                known_item_ids=known_ids(settings.store_dir, "items"),
                docs_dir=run_dir / "data-docs" if settings.validation_data_docs else None,
                now=now,
                progress=progress,
                on_chunk=(lambda dataset, kept, dropped: writers[dataset].append(kept, dropped))
                if writers else None,
                scratch_dir=staging / "_parts",
                mapper=mapper,
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
            write_reports(run_dir, report)
            _notify(on_report, report)
            raise ValidationFailed(report.failures, quarantine_dir=quarantined)

        try:
            if report.invalid_index:
                batch, dropped = split_invalid_rows(batch, report)
                for dataset, frame in dropped.items():
                    path = write_dropped(frame, batch, dataset, run_dir / "dropped")
                    report.dropped[dataset]["file"] = str(path)
                    log.warning("dropped %d invalid %s rows (kept in %s)", len(frame), dataset,
                                path)
            files = write_batch_parquet(batch, staging)  # it normalizes the batch
            for dataset, writer in writers.items():
                dropped_dir = run_dir / "dropped" if dataset in report.dropped else None
                files[dataset], aside = writer.finish(dropped_dir)
                if aside is not None:
                    report.dropped[dataset]["file"] = str(aside)
                    log.warning("dropped %d invalid %s rows (kept in %s)",
                                report.dropped[dataset]["rows"], dataset, aside)
            stored = commit_batch(files, raw_root=settings.store_dir)
        except BaseException:
            _discard(writers)
            raise
    write_reports(run_dir, report)
    _notify(on_report, report)
    log.info("batch %s valid: %s rows; %s %s", input_dir, stored.rows,
             "already in the raw store as" if stored.skipped else "stored as batch",
             stored.batch_id)
    return IngestResult(report=report, stored=stored)


def check_input_dir(input_dir: Path, *, data_dir: Path) -> None:
    """Refuse an input directory that is the data dir, holds it, or lies in a folder of it
    that the pipeline owns (`OWNED_DATA_FOLDERS`; in ``quarantine/`` only a quarantined
    batch, ``quarantine/<run id>``, is a batch). Paths are compared resolved, so ``.``,
    ``..`` and symbolic links cannot hide the data dir.

    Raises:
        InputFileError: rule ``input_outside_data_dir``, naming the input and the data dir.
    """
    path, data = Path(input_dir).resolve(), Path(data_dir).resolve()
    problem = None
    if data.is_relative_to(path):
        problem = "it is or holds the data dir"
    elif path.is_relative_to(data):
        parts = path.relative_to(data).parts
        resubmitted = (parts[0] == "quarantine" and len(parts) == 2
                       and not parts[1].startswith("."))
        if parts[0] in OWNED_DATA_FOLDERS and not resubmitted:
            problem = f"it lies in {parts[0]}/ of the data dir, which the pipeline owns"
    if problem is not None:
        raise InputFileError(
            input_dir, f"refused as a batch folder: {problem} ({data_dir}); a batch folder "
            "is outside the data dir's own folders (" + ", ".join(OWNED_DATA_FOLDERS)
            + "), e.g. data/demo", rule="input_outside_data_dir")


def _reject_unreadable(error: InputFileError, input_dir: Path, *, run_id: str,
                       settings: Settings, on_report: ReportCallback | None) -> NoReturn:
    """Quarantine a batch that could not be read (when its folder exists), then raise."""
    report = ValidationReport.from_input_error(error)
    if not input_dir.is_dir():
        _notify(on_report, report)
        raise error
    quarantined = quarantine_batch(input_dir, quarantine_root=settings.quarantine_dir,
                                   run_id=run_id, report=report)
    write_reports(settings.validation_dir / run_id, report)
    _notify(on_report, report)
    raise InputFileError(error.path, f"{error.problem} (batch quarantined in {quarantined})",
                         column=error.column, rule=error.rule) from None


def _discard(writers: dict[str, ChunkWriter]) -> None:
    for writer in writers.values():
        writer.discard()


def _notify(callback: ReportCallback | None, report: ValidationReport) -> None:
    if callback is not None:
        callback(report)
