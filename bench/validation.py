"""Validation benchmark: the whole validate stage against a bare DuckDB copy of the same batch.

For N interactions (with N/50 users and N/200 items) written as parquet, it times, each in a
fresh process (so one phase's memory does not help the next):

* `duckdb-copy`   -- the baseline (issue 14): `COPY (SELECT * FROM <batch file>) TO parquet` of
                     the three files through plain DuckDB
                     (`bench.phases.validate_batch.bare_batch_copy`, best of 3);
* `pyarrow-read`  -- `pyarrow.parquet.read_table` of the three files (best of 3), for reference;
* `ingest_batch`  -- the whole stage, `ingest.stage.ingest_batch` (read, 35 GE expectations,
                     normalize, write into the raw store), Data Docs off, in a temporary data
                     dir, holding the interactions whole;
* `ingest_batch/chunked` -- the same streaming the interactions `--chunk-rows` rows at a time
                     (`RECSYS_VALIDATE_CHUNK_ROWS`), the parts run one after another
                     (`serial_map`); only with `--chunk-rows`;
* `ingest_batch/parallel` -- the same with the parts run by a process pool of `--workers`
                     processes (the mapper a Dask cluster stands in for); only with
                     `--chunk-rows`;

With ``--engines pandas duckdb`` each `ingest_batch` phase runs once per validation engine
(`RECSYS_VALIDATION_ENGINE`: GE's pandas engine, or its SQL engine on DuckDB). It prints each
phase's seconds, its ratio to `duckdb-copy`, and its peak RSS (`VmHWM` of the
phase's own process). The GE import (seconds, once per process) is not counted.

    python -m bench validation --interactions 1000000 5000000 --chunk-rows 1000000
    python -m bench validation --interactions 5000000 --chunk-rows 1000000 --workers 2 \
        --phases duckdb-copy ingest_batch/chunked ingest_batch/parallel
    python -m bench validation --interactions 1000000 --engines pandas duckdb \
        --phases duckdb-copy ingest_batch
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from bench.child_process import peak_rss_mib, run_child
from bench.phases.validate_batch import bare_batch_copy
from ingest.reader import batch_files
from ingest.stage import ingest_batch
from recsys.settings import load_settings

PHASES = ("duckdb-copy", "pyarrow-read", "ingest_batch", "ingest_batch/chunked",
          "ingest_batch/parallel")
_CHUNKED = ("ingest_batch/chunked", "ingest_batch/parallel")


def generate(out_dir: Path, interactions: int, seed: int = 7) -> None:
    """Write users/items/interactions parquet for `interactions` rows (vectorised numpy)."""
    rng = np.random.default_rng(seed)
    n_users, n_items = max(10, interactions // 50), max(10, interactions // 200)
    out_dir.mkdir(parents=True, exist_ok=True)
    user_ids = np.char.add("u", np.char.zfill(np.arange(n_users).astype(str), 7))
    item_ids = np.char.add("i", np.char.zfill(np.arange(n_items).astype(str), 6))
    pq.write_table(pa.table({"user_id": user_ids, "age": rng.integers(16, 80, n_users)}),
                   out_dir / "users.parquet")
    pq.write_table(pa.table({"item_id": item_ids,
                             "title": np.char.add("title ", np.arange(n_items).astype(str))}),
                   out_dir / "items.parquet")
    pq.write_table(pa.table({
        "user_id": user_ids[rng.integers(0, n_users, interactions)],
        "item_id": item_ids[(rng.pareto(1.2, interactions) * 10).astype(np.int64) % n_items],
        "timestamp": 1_690_000_000 + rng.integers(0, 31_536_000, interactions),
        "rating": rng.integers(1, 6, interactions).astype(np.float64),
    }), out_dir / "interactions.parquet", row_group_size=1_000_000)


def _import_gx() -> None:
    # GE's one-off import (~10 s) is not what we measure.
    import great_expectations  # noqa: F401


class PoolMapper:
    """A `recsys.partitions.Mapper` running the parts in a process pool (Dask's stand-in)."""

    def __init__(self, pool: ProcessPoolExecutor) -> None:
        self.pool = pool

    def __call__(self, label: str, fn: Any, args_list: Any) -> list[Any]:
        return list(self.pool.map(fn, *zip(*args_list, strict=True)))


def _best_of_three(run: Any) -> tuple[float, Any]:
    timings, value = [], None
    for _ in range(3):  # the baseline is cheap: best of three keeps it honest
        started = time.perf_counter()
        value = run()
        timings.append(time.perf_counter() - started)
    return min(timings), value


def _phase(phase: str, batch_dir: Path, chunk_rows: int | None = None,
           workers: int = 2, engine: str = "pandas") -> dict[str, Any]:
    """Run one phase in this process; return its seconds and peak RSS (MiB)."""
    result: dict[str, Any] = {}
    if phase.startswith("ingest_batch"):
        _import_gx()
        data_dir = Path(tempfile.mkdtemp(prefix="ingest-", dir=batch_dir.parent))
        settings = load_settings(data_dir=data_dir, validation_data_docs=False,
                                 validation_engine=engine,
                                 validate_chunk_rows=chunk_rows if phase in _CHUNKED
                                 else 10**12)
        pool = ProcessPoolExecutor(workers) if phase == "ingest_batch/parallel" else None
        mapper = {} if pool is None else {"mapper": PoolMapper(pool)}
        try:
            started = time.perf_counter()
            ingested = ingest_batch(batch_dir, run_id="bench", settings=settings, **mapper)
            result["seconds"] = time.perf_counter() - started
        finally:
            if pool is not None:
                pool.shutdown()
        result["success"] = float(ingested.report.success)
        result["rows_written"] = ingested.stored.rows["interactions"]
        shutil.rmtree(data_dir, ignore_errors=True)
    elif phase == "duckdb-copy":
        out = Path(tempfile.mkdtemp(prefix="copy-", dir=batch_dir.parent))
        result["seconds"], result["rows"] = _best_of_three(
            lambda: bare_batch_copy(batch_files(batch_dir), out))
        shutil.rmtree(out, ignore_errors=True)
    else:  # pyarrow-read
        pq.read_schema(batch_dir / "users.parquet")  # first-call set-up is not reading
        result["seconds"], result["rows"] = _best_of_three(
            lambda: sum(pq.read_table(batch_dir / f"{name}.parquet").num_rows
                        for name in ("users", "items", "interactions")))
    result["peak_rss_mib"] = peak_rss_mib()
    return result


def main(argv: list[str] | None = None) -> None:
    """Time every phase at each size, each in a fresh process; print the figures."""
    parser = argparse.ArgumentParser(prog="python -m bench validation",
                                     description=__doc__.splitlines()[0])
    parser.add_argument("--interactions", type=int, nargs="+", default=[1_000_000])
    parser.add_argument("--work", type=Path, default=None, help="scratch folder (default: tmp)")
    parser.add_argument("--chunk-rows", type=int, default=None,
                        help="also run ingest_batch streaming interactions this many rows at a "
                             "time (phase ingest_batch/chunked)")
    parser.add_argument("--workers", type=int, default=2,
                        help="processes of the pool in phase ingest_batch/parallel")
    parser.add_argument("--phases", nargs="+", choices=PHASES, default=None,
                        help="phases to run (default: all that apply)")
    parser.add_argument("--engines", nargs="+", choices=("pandas", "duckdb"),
                        default=["pandas"], help="validation engines to run the ingest_batch "
                        "phases with (RECSYS_VALIDATION_ENGINE), each as its own phase")
    parser.add_argument("--engine", default="pandas", help=argparse.SUPPRESS)
    parser.add_argument("--phase", choices=PHASES, help=argparse.SUPPRESS)
    parser.add_argument("--batch", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    if args.phase:  # child process
        print(json.dumps(_phase(args.phase, args.batch, args.chunk_rows, args.workers,
                                args.engine)))
        return
    phases = [p for p in (args.phases or PHASES)
              if p not in _CHUNKED or args.chunk_rows is not None]
    if set(_CHUNKED) & set(args.phases or ()) and args.chunk_rows is None:
        parser.error("phases ingest_batch/chunked and ingest_batch/parallel need --chunk-rows")

    work = args.work or Path(tempfile.mkdtemp(prefix="valbench-"))
    for n in args.interactions:
        case = work / f"n{n}"
        shutil.rmtree(case, ignore_errors=True)
        started = time.perf_counter()
        generate(case / "batch", n)
        print(f"\n{n:,} interactions (generated in {time.perf_counter() - started:.1f}s, "
              f"{(case / 'batch' / 'interactions.parquet').stat().st_size / 2**20:.1f} MiB "
              f"parquet; load average {os.getloadavg()[0]:.2f})")
        figures: dict[str, dict[str, float]] = {}
        runs = [(p, e) for p in phases
                for e in (args.engines if p.startswith("ingest_batch") else ["pandas"])]
        for phase, engine in runs:
            extra = ["--chunk-rows", str(args.chunk_rows)] if args.chunk_rows else []
            label = (f"{phase} [{engine}]" if phase.startswith("ingest_batch")
                     and len(args.engines) > 1 else phase)
            figures[label] = run_child("bench.validation", [
                "--phase", phase, "--batch", str(case / "batch"), "--workers",
                str(args.workers), "--engine", engine, *extra])
            f = figures[label]
            base = figures.get("duckdb-copy", {}).get("seconds")
            ratio = f"  {f['seconds'] / base:6.2f}x copy" if base else ""
            detail = {"ingest_batch/chunked": f" (chunks of {args.chunk_rows or 0:,} rows)",
                      "ingest_batch/parallel": f" (chunks of {args.chunk_rows or 0:,} rows, "
                                               f"{args.workers} processes)"}.get(phase, "")
            print(f"  {label:<31} {f['seconds']:8.2f}s{ratio}  peak RSS "
                  f"{f['peak_rss_mib']:,.0f} MiB{detail}")
        print(f"  load average after: {os.getloadavg()[0]:.2f}")
        shutil.rmtree(case, ignore_errors=True)
    if args.work is None:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
