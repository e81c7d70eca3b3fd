"""Feature-store benchmark: build every view for N generated interactions.

Compares, on the same normalized input and the same SQL:

* `ours-batch` -- `features.snapshot.build_snapshot` on the batch's files (the pipeline stage);
* `ours-store` -- `features.stage.build_features_as_of` over the raw store (after ingesting);
* `bare`       -- plain DuckDB: the same relations and `COPY (SELECT ...) TO parquet` per view,
                  without manifests, hashing, schema checks or atomic renames.

Each phase runs in its own process and reports its own peak RSS (`VmHWM`).

    .venv/bin/python bench/features.py --interactions 5000000 --work /tmp/featbench
    .venv/bin/python bench/features.py --interactions 50000000 --memory-limit 6GB  # full size
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))


def _lit(path: Path) -> str:
    return "'" + str(path).replace("'", "''") + "'"


def prepare(work: Path, interactions: int, seed: int) -> dict[str, Path]:
    """Generate a batch and normalize it like the validate stage's output."""
    from features.raw_store import connect
    from recsys.datagen import generate_batch

    gen = work / "generated"
    users, items = max(interactions // 50, 10), max(interactions // 500, 10)
    if not (gen / "interactions.parquet").exists():
        generate_batch(gen, users=users, items=items, interactions=interactions, seed=seed,
                       fmt="parquet")
    raw = work / "raw"
    raw.mkdir(parents=True, exist_ok=True)
    files = {name: raw / f"{name}.parquet" for name in ("users", "items", "interactions")}
    if not files["interactions"].exists():
        con = connect(memory_limit="6GB")
        con.execute(f"COPY (SELECT * FROM read_parquet({_lit(gen / 'users.parquet')})) "
                    f"TO {_lit(files['users'])} (FORMAT parquet)")
        con.execute(f"COPY (SELECT * FROM read_parquet({_lit(gen / 'items.parquet')})) "
                    f"TO {_lit(files['items'])} (FORMAT parquet)")
        con.execute(
            "COPY (SELECT user_id, item_id, to_timestamp(\"timestamp\") AS \"timestamp\", "
            "rating, NULL::DOUBLE AS weight, event_type FROM "
            f"read_parquet({_lit(gen / 'interactions.parquet')})) TO "
            f"{_lit(files['interactions'])} (FORMAT parquet)")
        con.close()
    return files


def phase_ours_batch(work: Path, threads: int, memory_limit: str) -> dict:
    from features.snapshot import build_views, sources_from_raw_files

    files = {n: work / "raw" / f"{n}.parquet" for n in ("users", "items", "interactions")}
    out = work / "ours_batch"
    shutil.rmtree(out, ignore_errors=True)
    started = time.perf_counter()
    manifest = build_views(sources_from_raw_files(files), features_root=out, snapshot_id="b",
                           threads=threads, memory_limit=memory_limit)
    return {"seconds": time.perf_counter() - started,
            "rows": {n: v.rows for n, v in manifest.views.items()}}


def phase_ingest(work: Path, threads: int, memory_limit: str) -> dict:
    from features.raw_store import ingest_into_store

    files = {n: work / "raw" / f"{n}.parquet" for n in ("users", "items", "interactions")}
    store = work / "store"
    shutil.rmtree(store, ignore_errors=True)
    started = time.perf_counter()
    summary = ingest_into_store(files, raw_root=store)
    first = time.perf_counter() - started
    started = time.perf_counter()
    again = ingest_into_store(files, raw_root=store)
    return {"seconds": first, "reingest_seconds": time.perf_counter() - started,
            "partitions": len(summary.dates), "reingest_skipped": again.skipped}


def phase_ours_store(work: Path, threads: int, memory_limit: str) -> dict:
    from features.snapshot import build_views, sources_from_store

    out = work / "ours_store"
    shutil.rmtree(out, ignore_errors=True)
    started = time.perf_counter()
    manifest = build_views(sources_from_store(work / "store", None), features_root=out,
                           snapshot_id="s", threads=threads, memory_limit=memory_limit)
    return {"seconds": time.perf_counter() - started,
            "rows": {n: v.rows for n, v in manifest.views.items()}}


def phase_bare(work: Path, threads: int, memory_limit: str) -> dict:
    import duckdb

    from features.registry import DEFAULT_PARAMS, REGISTRY

    raw = work / "raw"
    out = work / "bare"
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    started = time.perf_counter()
    con = duckdb.connect()
    con.execute("SET TimeZone = 'UTC'")
    con.execute(f"SET threads = {threads}")
    con.execute(f"SET memory_limit = '{memory_limit}'")
    for name in ("users", "items", "interactions"):
        con.execute(f"CREATE VIEW raw_{name} AS SELECT * FROM "
                    f"read_parquet({_lit(raw / (name + '.parquet'))})")
    con.execute("CREATE VIEW item_genres AS SELECT item_id, UNNEST(genres) AS genre "
                "FROM raw_items")
    con.execute("CREATE TABLE build_params AS SELECT MAX(\"timestamp\") AS as_of, "
                f"{DEFAULT_PARAMS['half_life_days']}::DOUBLE AS half_life_days, "
                f"{DEFAULT_PARAMS['recent_days']}::INTEGER AS recent_days, "
                f"{DEFAULT_PARAMS['top_genres']}::INTEGER AS top_genres FROM raw_interactions")
    for view in REGISTRY.values():
        con.execute(f"COPY ({view.sql}) TO {_lit(out / (view.name + '.parquet'))} "
                    "(FORMAT parquet, COMPRESSION zstd)")
    con.close()
    return {"seconds": time.perf_counter() - started}


PHASES = {"ours-batch": phase_ours_batch, "ingest": phase_ingest, "ours-store": phase_ours_store,
          "bare": phase_bare}


def run_phase(name: str, args: argparse.Namespace) -> dict:
    """Run one phase in a child process (which reports its own peak RSS in MiB)."""
    cmd = [sys.executable, __file__, "--phase", name, "--work", str(args.work),
           "--threads", str(args.threads), "--memory-limit", args.memory_limit]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, cwd=REPO)
    assert proc.stdout is not None
    output = proc.stdout.read()
    if proc.wait() != 0:
        raise SystemExit(f"phase {name} failed with status {proc.returncode}")
    return json.loads(output.decode().strip().splitlines()[-1])


def _peak_rss_mib() -> float:
    """This process's peak resident set (VmHWM; unlike ru_maxrss it starts afresh at exec)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return round(int(line.split()[1]) / 1024, 1)
    import resource

    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)


def main() -> None:
    parser = argparse.ArgumentParser(description="feature store build benchmark")
    parser.add_argument("--interactions", type=int, default=5_000_000)
    parser.add_argument("--work", type=Path, default=Path("/tmp/featbench"))
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--memory-limit", default="6GB")
    parser.add_argument("--repeat", type=int, default=1, help="runs per phase (best is kept)")
    parser.add_argument("--phase", choices=sorted(PHASES), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.phase:
        result = PHASES[args.phase](args.work, args.threads, args.memory_limit)
        result["peak_rss_mib"] = _peak_rss_mib()
        print(json.dumps(result))
        return
    args.work.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    prepare(args.work, args.interactions, args.seed)
    prep = time.perf_counter() - started
    results: dict[str, dict] = {}
    for name in ("bare", "ours-batch", "ingest", "ours-store"):
        runs = [run_phase(name, args) for _ in range(args.repeat)]
        results[name] = min(runs, key=lambda r: r["seconds"])
    bare = results["bare"]["seconds"]
    report = {
        "interactions": args.interactions, "threads": args.threads,
        "memory_limit": args.memory_limit, "prepare_seconds": round(prep, 1),
        **{name: {k: (round(v, 2) if isinstance(v, float) else v) for k, v in r.items()}
           for name, r in results.items()},
        "ratio_ours_batch_vs_bare": round(results["ours-batch"]["seconds"] / bare, 3),
        "ratio_ours_store_vs_bare": round(results["ours-store"]["seconds"] / bare, 3),
    }
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
