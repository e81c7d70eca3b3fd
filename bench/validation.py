"""Validation benchmark: the data-contract stage vs just reading the same file with pyarrow.

For N interactions (with N/50 users and N/200 items) written as parquet, it times, each in a
fresh process (so one phase's memory does not help the next):

* `pyarrow-read`  -- `pyarrow.parquet.read_table` of the three files (the baseline, best of 3);
* `read_batch`    -- `ingest.reader.read_batch` (parquet -> pandas, ids as strings);
* `validate`      -- `ingest.validate.validate_batch` (three GE checkpoints, helper columns,
                     SUMMARY results), without Data Docs;
* `validate+docs` -- the same with GE Data Docs built, as the pipeline does;
* `ingest_batch`  -- the whole stage, `ingest.stage.ingest_batch` (read, validate, normalize,
                     write into the raw store), Data Docs off, in a temporary data dir, holding
                     the interactions whole;
* `ingest_batch/chunked` -- the same streaming the interactions `--chunk-rows` rows at a time
                     (`RECSYS_VALIDATE_CHUNK_ROWS`); only with `--chunk-rows`;

and prints the figures and the ratio (read_batch + validate) / pyarrow-read, plus peak RSS
(`VmHWM` of the phase's own process).

    python -m bench validation --interactions 1000000 2000000
    python -m bench validation --interactions 10000000   # the issue's full size
    python -m bench validation --interactions 2000000 --chunk-rows 500000 \
        --phases ingest_batch ingest_batch/chunked
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from bench.child_process import peak_rss_mib, run_child
from ingest.reader import read_batch
from ingest.stage import ingest_batch
from ingest.validate import validate_batch
from recsys.settings import load_settings

PHASES = ("pyarrow-read", "read_batch", "validate", "validate+docs", "ingest_batch",
          "ingest_batch/chunked")


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


def _phase(phase: str, batch_dir: Path, chunk_rows: int | None = None) -> dict[str, Any]:
    """Run one phase in this process; return its seconds and peak RSS (MiB)."""
    result: dict[str, Any] = {}
    if phase.startswith("ingest_batch"):
        _import_gx()
        data_dir = Path(tempfile.mkdtemp(prefix="ingest-", dir=batch_dir.parent))
        whole = phase == "ingest_batch"
        settings = load_settings(data_dir=data_dir, validation_data_docs=False,
                                 validate_chunk_rows=10**12 if whole else chunk_rows)
        started = time.perf_counter()
        ingested = ingest_batch(batch_dir, run_id="bench", settings=settings)
        result["seconds"] = time.perf_counter() - started
        result["success"] = float(ingested.report.success)
        result["rows_written"] = ingested.stored.rows["interactions"]
        shutil.rmtree(data_dir, ignore_errors=True)
    elif phase == "pyarrow-read":
        pq.read_schema(batch_dir / "users.parquet")  # first-call set-up is not reading
        timings = []
        for _ in range(3):  # best of three: the baseline is cheap, keep it honest
            started = time.perf_counter()
            rows = sum(pq.read_table(batch_dir / f"{name}.parquet").num_rows
                       for name in ("users", "items", "interactions"))
            timings.append(time.perf_counter() - started)
        result["seconds"] = min(timings)
        result["rows"] = rows
    else:
        _import_gx()
        started = time.perf_counter()
        batch = read_batch(batch_dir)
        result["read_seconds"] = time.perf_counter() - started
        if phase != "read_batch":
            settings = load_settings(data_dir=batch_dir.parent / "data")
            docs = batch_dir.parent / "docs" if phase == "validate+docs" else None
            started = time.perf_counter()
            report = validate_batch(batch, expectations_dir=settings.expectations_dir,
                                    settings=settings, docs_dir=docs)
            result["validate_seconds"] = time.perf_counter() - started
            result["success"] = float(report.success)
            if not report.success:
                raise SystemExit(f"benchmark batch failed validation: {report.failures}")
        result["seconds"] = result["read_seconds"] + result.get("validate_seconds", 0.0)
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
    parser.add_argument("--phases", nargs="+", choices=PHASES, default=None,
                        help="phases to run (default: all that apply)")
    parser.add_argument("--phase", choices=PHASES, help=argparse.SUPPRESS)
    parser.add_argument("--batch", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    if args.phase:  # child process
        print(json.dumps(_phase(args.phase, args.batch, args.chunk_rows)))
        return
    phases = [p for p in (args.phases or PHASES)
              if p != "ingest_batch/chunked" or args.chunk_rows is not None]
    if "ingest_batch/chunked" in (args.phases or ()) and args.chunk_rows is None:
        parser.error("phase ingest_batch/chunked needs --chunk-rows")

    work = args.work or Path(tempfile.mkdtemp(prefix="valbench-"))
    for n in args.interactions:
        case = work / f"n{n}"
        shutil.rmtree(case, ignore_errors=True)
        started = time.perf_counter()
        generate(case / "batch", n)
        print(f"\n{n:,} interactions (generated in {time.perf_counter() - started:.1f}s, "
              f"{(case / 'batch' / 'interactions.parquet').stat().st_size / 2**20:.1f} MiB "
              "parquet)")
        figures: dict[str, dict[str, float]] = {}
        for phase in phases:
            extra = ["--chunk-rows", str(args.chunk_rows)] if args.chunk_rows else []
            figures[phase] = run_child("bench.validation", ["--phase", phase, "--batch",
                                                            str(case / "batch"), *extra])
            f = figures[phase]
            detail = (f" (read {f['read_seconds']:.2f}s + validate "
                      f"{f.get('validate_seconds', 0.0):.2f}s)" if "read_seconds" in f else "")
            if phase == "ingest_batch/chunked":
                detail = f" (chunks of {args.chunk_rows:,} rows)"
            print(f"  {phase:<20} {f['seconds']:8.2f}s{detail}  peak RSS "
                  f"{f['peak_rss_mib']:,.0f} MiB")
        if {"pyarrow-read", "validate", "validate+docs"} <= set(figures):
            base = figures["pyarrow-read"]["seconds"]
            print(f"  ratio validate/pyarrow-read: {figures['validate']['seconds'] / base:.1f}x; "
                  f"with Data Docs: {figures['validate+docs']['seconds'] / base:.1f}x; "
                  f"GE part alone: {figures['validate']['validate_seconds'] / base:.1f}x")
        shutil.rmtree(case, ignore_errors=True)
    if args.work is None:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
