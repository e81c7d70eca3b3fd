"""Stage `validation`: `ingest.stage.ingest_batch` beside a bare DuckDB copy of the batch.

Ours is the pipeline's whole validate task: read, GE contracts, normalize, and write the batch
into the raw store (date partitions, content hash), where the features stage reads it.

The baseline is the least I/O the stage must do (issue 14): read every file of the batch and
write a clean parquet copy of it, `COPY (SELECT * FROM <batch file>) TO ... (FORMAT parquet)`
through plain DuckDB, with the store's compression (zstd), nothing else.
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import duckdb

from bench.workspace import RUN_ID, Size, batch_dir, bench_settings, phase_main, record_output
from ingest.raw_store import store_files
from ingest.reader import DATASETS, batch_files
from ingest.stage import ingest_batch


def _lit(value: Path | str) -> str:
    return "'" + str(value).replace("'", "''") + "'"


def bare_batch_copy(files: Sequence[Path], out: Path, *, threads: int | None = None) -> int:
    """Copy each batch file to `<out>/<stem>.parquet` through plain DuckDB; return the rows.

    `COPY (SELECT * FROM '<file>') TO '<out>/<stem>.parquet' (FORMAT parquet, COMPRESSION zstd)`
    per file (DuckDB reads `.csv` and `.parquet` by extension): the raw baseline of the validate
    stage, which must at least read the batch and write its clean copy.

    Args:
        files: the batch's table files (`ingest.reader.batch_files`).
        out: an existing folder for the copies.
        threads: DuckDB's threads (default: DuckDB's, every core).

    Returns:
        The rows copied, over all files.
    """
    con = duckdb.connect()
    try:
        if threads is not None:
            con.execute(f"SET threads = {int(threads)}")
        rows = 0
        for path in files:
            copied = con.execute(
                f"COPY (SELECT * FROM {_lit(path)}) TO {_lit(out / (path.stem + '.parquet'))} "
                "(FORMAT parquet, COMPRESSION zstd)").fetchone()
            rows += int(copied[0]) if copied else 0
        return rows
    finally:
        con.close()


def baseline(work: Path, size: Size, uri: str) -> dict[str, Any]:
    """Bare DuckDB `COPY (SELECT * FROM <batch file>) TO parquet` of every batch file (best of
    three up to 10M rows, as `python -m bench validation` measures it)."""
    out = work / "bare_batch"
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    files = batch_files(batch_dir(work))
    timings, rows = [], 0
    for _ in range(3 if size.interactions <= 10_000_000 else 1):  # cheap: best of three
        started = time.perf_counter()
        rows = bare_batch_copy(files, out)
        timings.append(time.perf_counter() - started)
    shutil.rmtree(out, ignore_errors=True)
    return {"seconds": min(timings), "rows": rows, "files": len(files)}


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
