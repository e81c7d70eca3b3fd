"""The pipeline's validate stage as one plain function (the flow wraps it in a task)."""

from __future__ import annotations

import logging
from pathlib import Path

from ingest.quarantine import quarantine_batch
from ingest.reader import normalize_batch, read_batch, write_batch_parquet
from ingest.validate import ValidationReport, validate_batch
from recsys.errors import InputFileError, ValidationFailed
from recsys.settings import Settings

log = logging.getLogger(__name__)


def ingest_batch(input_dir: Path, *, run_id: str, settings: Settings
                 ) -> tuple[dict[str, Path], ValidationReport]:
    """Read and validate a batch; write it as normalized parquet under `raw/<run_id>/`.

    A batch that cannot be read or fails its contract is copied intact to
    `quarantine/<run_id>/` with a report, and the error (InputFileError or ValidationFailed)
    is raised; nothing is written under `raw/`.
    """
    try:
        batch = read_batch(input_dir)
    except InputFileError as error:
        if not Path(input_dir).is_dir():
            raise
        quarantined = quarantine_batch(input_dir, quarantine_root=settings.quarantine_dir,
                                       run_id=run_id,
                                       report=ValidationReport.from_input_error(error))
        raise InputFileError(error.path, f"{error.problem} (batch quarantined in {quarantined})",
                             column=error.column, rule=error.rule) from None
    report = validate_batch(batch, expectations_dir=settings.expectations_dir)
    if not report.success:
        quarantined = quarantine_batch(batch, quarantine_root=settings.quarantine_dir,
                                       run_id=run_id, report=report)
        raise ValidationFailed(report.failures, quarantine_dir=quarantined)
    raw_files = write_batch_parquet(normalize_batch(batch), settings.raw_dir / run_id)
    log.info("batch %s valid: %s", input_dir,
             {name: len(batch.frame(name)) for name in ("users", "items", "interactions")})
    return raw_files, report
