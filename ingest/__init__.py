"""Ingest: read, validate (Great Expectations) and quarantine incoming batches.

Great Expectations is imported lazily by `validate_batch`, so importing this package is cheap.
"""

from ingest.quarantine import quarantine_batch
from ingest.reader import Batch, normalize_batch, read_batch, write_batch_parquet
from ingest.validate import ValidationReport, validate_batch

__all__ = [
    "Batch",
    "ValidationReport",
    "normalize_batch",
    "quarantine_batch",
    "read_batch",
    "validate_batch",
    "write_batch_parquet",
]
