"""Stage `validation`: `ingest.stage.ingest_batch` beside a bare `pyarrow` read of the batch.

Ours is the pipeline's whole validate task: read, GE contracts, normalize, and write the batch
into the raw store (date partitions, content hash), where the features stage reads it.
"""

from __future__ import annotations

import shutil
import time
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq

from bench.workspace import RUN_ID, Size, batch_dir, bench_settings, phase_main, record_output
from ingest.raw_store import store_files
from ingest.reader import DATASETS
from ingest.stage import ingest_batch


def baseline(work: Path, size: Size, uri: str) -> dict[str, Any]:
    """`pyarrow.parquet.read_table` of the three files (best of three up to 10M rows)."""
    files = [batch_dir(work) / f"{name}.parquet" for name in DATASETS]
    timings, rows = [], 0
    for _ in range(3 if size.interactions <= 10_000_000 else 1):  # cheap: best of three
        started = time.perf_counter()
        rows = sum(pq.read_table(f).num_rows for f in files)
        timings.append(time.perf_counter() - started)
    return {"seconds": min(timings), "rows": rows}


def ours(work: Path, size: Size, uri: str) -> dict[str, Any]:
    """The pipeline's validate task: read, GE contracts, normalize, write into the raw store."""
    settings = bench_settings(work, uri)
    for folder in (settings.store_dir, settings.validation_dir, settings.quarantine_dir):
        shutil.rmtree(folder, ignore_errors=True)  # the work folder's, from a rerun
    started = time.perf_counter()
    # GE's import takes seconds once per process; counted apart so that sizes compare.
    import great_expectations  # noqa: F401

    import_s = time.perf_counter() - started
    started = time.perf_counter()
    result = ingest_batch(batch_dir(work), run_id=RUN_ID, settings=settings)
    seconds = time.perf_counter() - started
    record_output(work, "stored_files", {
        name: [str(p) for p in store_files(settings.store_dir, name, batches=[result.stored])]
        for name in DATASETS})
    return {"seconds": seconds, "ge_import_seconds": import_s,
            "success": result.report.success,
            "rows": {s["dataset"]: s["rows"] for s in result.report.suites}}


PHASES = {"baseline": baseline, "ours": ours}

if __name__ == "__main__":
    phase_main(PHASES)
