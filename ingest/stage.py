"""The pipeline's validate stage as one plain function (the flow wraps it in a task)."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from pathlib import Path

import pandas as pd

from ingest.quarantine import quarantine_batch
from ingest.reader import Batch, normalize_batch, read_batch, write_batch_parquet
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

    A batch that cannot be read or fails its contract is *moved* intact to
    `quarantine/<run_id>/` with a report, and the error (InputFileError or ValidationFailed)
    is raised; nothing is written under `raw/`, so features, models and serving are untouched.

    Args:
        input_dir: the batch directory.
        run_id: names the raw, validation and quarantine folders of this run.
        settings: paths, contract policies and bounds.
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
        batch = read_batch(input_dir)
    except InputFileError as error:
        report = ValidationReport.from_input_error(error)
        if not input_dir.is_dir():
            _notify(on_report, report)
            raise
        quarantined = quarantine_batch(input_dir, quarantine_root=settings.quarantine_dir,
                                       run_id=run_id, report=report)
        _write_reports(run_dir, report)
        _notify(on_report, report)
        raise InputFileError(error.path, f"{error.problem} (batch quarantined in {quarantined})",
                             column=error.column, rule=error.rule) from None

    report = validate_batch(
        batch,
        expectations_dir=settings.expectations_dir,
        known_user_ids=_known_ids(settings, "users"),
        known_item_ids=_known_ids(settings, "items"),
        settings=settings,
        docs_dir=run_dir / "data-docs" if settings.validation_data_docs else None,
        now=now,
    )
    if not report.success:
        quarantined = quarantine_batch(batch, quarantine_root=settings.quarantine_dir,
                                       run_id=run_id, report=report)
        _write_reports(run_dir, report)
        _notify(on_report, report)
        raise ValidationFailed(report.failures, quarantine_dir=quarantined)

    if report.invalid_index:
        batch, dropped = split_invalid_rows(batch, report)
        for dataset, frame in dropped.items():
            path = _write_dropped(frame, batch, dataset, run_dir / "dropped")
            report.dropped[dataset]["file"] = str(path)
            log.warning("dropped %d invalid %s rows (kept in %s)", len(frame), dataset, path)
    raw_files = write_batch_parquet(normalize_batch(batch), settings.raw_dir / run_id)
    _write_reports(run_dir, report)
    _notify(on_report, report)
    log.info("batch %s valid: %s", input_dir,
             {name: len(batch.frame(name)) for name in ("users", "items", "interactions")})
    return raw_files, report


def _known_ids(settings: Settings, dataset: str) -> set[str]:
    """Ids of `dataset` ingested by earlier batches (the feature store's raw store)."""
    from features.raw_store import known_ids

    return {str(v) for v in known_ids(settings.store_dir, dataset)}


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
        import pyarrow as pa
        import pyarrow.parquet as pq

        path = folder / f"{dataset}.parquet"
        try:
            table = pa.Table.from_pandas(frame, preserve_index=False)
        except (pa.ArrowException, TypeError, ValueError):
            # Mixed-type object columns: keep them as text rather than lose the rows.
            table = pa.Table.from_pandas(frame.astype({c: "str" for c in frame.columns
                                                       if frame[c].dtype == object}),
                                         preserve_index=False)
        pq.write_table(table, path)
        return path
    path = folder / f"{dataset}.csv"
    frame.to_csv(path, index=False)
    return path
