"""The pipeline on the local runner beside the Dask runner: per-stage seconds and speed-up.

    python -m bench dask-scaling --size medium                 # 5M interactions, 2 workers
    python -m bench dask-scaling --size small --out /tmp/dask  # a quick look

It generates one batch (`recsys.datagen.generate_batch`, seed 42, the sizes of
`python -m bench run`), then runs the whole pipeline flow on it twice through the flow's entry
point (`flows.pipeline.batch_pipeline` in a fresh child process, `bench.phases.run_pipeline`),
with its settings from the environment:

- `local`: `RECSYS_TASK_RUNNER=local` (today's behaviour, one partition);
- `dask`: `RECSYS_TASK_RUNNER=dask`, a `distributed.LocalCluster` of `--workers` worker
  processes started for the run (or `--address` of an existing cluster), `RECSYS_PARTITIONS`
  from `--partitions` (default: the settings' own, 2 per worker).

Each run has its own data dir and MongoDB database (`recsys_bench_<runner>`), both emptied
before it, so neither reuses the other's raw store, feature snapshot, Prefect cache or
published version. The flow's `PipelineResult.timings` gives each stage's wall seconds; the
speed-up of a stage is local / dask (above 1: Dask is faster; below 1: its overhead - task
submission, pickling, worker start-up, moving files between processes - costs more than the
parallelism gains on this machine). The Dask cluster's start and stop fall outside the stages:
they show in the flow's wall time. Results go to `<out>/dask-scaling-<size>.json` and `.md`,
`<out>` being `--out` or `<RECSYS_DATA_DIR>/bench`.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
from collections.abc import Callable
from dataclasses import asdict
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from pymongo import MongoClient

from bench.child_process import run_child
from bench.report import round_floats
from bench.runner import results_dir
from bench.workspace import DB_NAME, SEED, SIZES, Size, machine_info, mongodb, work_folder
from recsys.settings import load_settings

RUNNERS = ("local", "dask")
# The flow's stages in run order (flows.pipeline: run_stage / run_cached names).
STAGE_ORDER = ("validate", "features", "train", "score", "gate", "publish")
SAME_WITHIN = 0.05  # a speed-up within 5 % of 1 is reported as "about the same"
# Prefect as `recsys pipeline` runs it: a slow 2-core machine, no network to phone home to.
PREFECT_DEFAULTS = {"PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "120",
                    "PREFECT_SERVER_ANALYTICS_ENABLED": "false", "GX_ANALYTICS_ENABLED": "False"}


def runner_env(runner: str, work: Path, uri: str, *, workers: int, partitions: int | None,
               address: str | None) -> dict[str, str | None]:
    """The environment of one run: its own data dir and database, the runner's settings.

    The runner's variables replace (None: remove) any the caller exported, so an exported
    `RECSYS_TASK_RUNNER` or `RECSYS_PARTITIONS` cannot change what either run measures.
    """
    dask = runner == "dask"
    env: dict[str, str | None] = {
        "RECSYS_DATA_DIR": str(work / runner / "data"), "MONGODB_URI": uri,
        "MONGODB_DB": f"{DB_NAME}_{runner}", "RECSYS_TASK_RUNNER": runner,
        "RECSYS_DASK_WORKERS": str(workers),
        "RECSYS_DASK_ADDRESS": address if dask and address else None,
        "RECSYS_PARTITIONS": str(partitions) if dask and partitions else None}
    return {**{k: os.environ.get(k, v) for k, v in PREFECT_DEFAULTS.items()}, **env}


def _verdict(speedup: float) -> str:
    if abs(speedup - 1) <= SAME_WITHIN:
        return "about the same"
    return "faster on Dask" if speedup > 1 else "**slower on Dask**"


def compare(runs: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """Per-stage seconds of each runner, the speed-up (local / dask) and the totals.

    Args:
        runs: "local" and "dask" -> what `bench.phases.run_pipeline` reported.

    Returns:
        ``{"stages": {stage: {"local": s, "dask": s, "speedup": x}}, "stages_total": {...},
        "flow": {...}, "outside_stages": {...}}``, the stages in the flow's order.
    """
    local, dask = runs["local"]["timings"], runs["dask"]["timings"]
    names = [s for s in STAGE_ORDER if s in local or s in dask]
    names += sorted((set(local) | set(dask)) - set(names))
    stages = {}
    for stage in names:
        row: dict[str, Any] = {"local": local.get(stage), "dask": dask.get(stage)}
        if row["local"] and row["dask"]:
            row["speedup"] = row["local"] / row["dask"]
        stages[stage] = row

    def pair(local_s: float, dask_s: float) -> dict[str, float]:
        return {"local": local_s, "dask": dask_s, "speedup": local_s / dask_s if dask_s else 0.0}

    total_local, total_dask = sum(local.values()), sum(dask.values())
    flow_local, flow_dask = runs["local"]["seconds"], runs["dask"]["seconds"]
    return {"stages": stages, "stages_total": pair(total_local, total_dask),
            "flow": pair(flow_local, flow_dask),
            "outside_stages": pair(flow_local - total_local, flow_dask - total_dask)}


def _load(run: dict[str, Any]) -> str:
    load = run.get("load_average_at_start")
    return "?" if load is None else f"{load:.1f}"


def markdown(results: dict[str, Any]) -> str:
    """The comparison as the markdown table docs/benchmarks.md shows."""
    size, runs, cmp = results["size"], results["runs"], results["comparison"]
    dask = runs["dask"]
    cluster = (f"the cluster at {dask['dask_address']}" if dask.get("dask_address")
               else f"a LocalCluster of {dask['dask_workers']} workers")
    machine = results["machine"]
    lines = [
        f"**{size['name']}**: {size['interactions']:,} interactions, {size['users']:,} users, "
        f"{size['items']:,} items; {machine['cpus']} CPUs; started {results['started_at']}; "
        f"load average {_load(runs['local'])} at the local run's start, {_load(dask)} at the "
        "Dask run's. "
        f"Dask: {cluster}, {dask['partitions']} partitions; local: "
        f"{runs['local']['partitions']} partition.",
        "",
        f"| stage | local (s) | dask, {dask['dask_workers']} workers (s) | speed-up "
        "(local / dask) | |",
        "|---|---:|---:|---:|---|",
    ]

    def cell(value: float | None) -> str:
        return "-" if value is None else f"{value:.1f}"

    for stage, row in cmp["stages"].items():
        speedup = row.get("speedup")
        lines.append(f"| {stage} | {cell(row['local'])} | {cell(row['dask'])} | "
                     f"{'-' if speedup is None else f'{speedup:.2f}x'} | "
                     f"{'' if speedup is None else _verdict(speedup)} |")
    for label, key in (("**sum of the stages**", "stages_total"),
                       ("outside the stages (cluster start/stop, flow bookkeeping)",
                        "outside_stages"),
                       ("**flow wall time**", "flow")):
        row = cmp[key]
        speedup = f"{row['speedup']:.2f}x" if row["speedup"] > 0 else "-"
        lines.append(f"| {label} | {row['local']:.1f} | {row['dask']:.1f} | {speedup} | |")
    lines += [
        "",
        f"Peak RSS (MiB): flow process {runs['local']['peak_rss_mib']:,.0f} local, "
        f"{dask['peak_rss_mib']:,.0f} dask; largest child process (Prefect server, Dask "
        f"nanny or worker) {runs['local']['children_peak_rss_mib']:,.0f} local, "
        f"{dask['children_peak_rss_mib']:,.0f} dask.",
        f"Where the stages ran, as the flow reported it: local: {runs['local'].get('where')}; "
        f"dask: {dask.get('where')}.",
        f"Same ALS holdout metrics on both runners: "
        f"{'yes' if results['same_metrics'] else '**no**'}.",
    ]
    return "\n".join(lines) + "\n"


def run_scaling(size: Size, *, results_dir: Path, work: Path | None = None,
                uri: str | None = None, workers: int = 2, partitions: int | None = None,
                address: str | None = None, keep: bool = False,
                echo: Callable[[str], Any] = print) -> dict[str, Any]:
    """Run the pipeline on the local and on the Dask runner; write and return the comparison.

    Args:
        size: the generated batch's shape (`bench.workspace.SIZES`).
        results_dir: where `dask-scaling-<size>.json` and `.md` go (created when missing).
        work: the work folder (default: a temp dir, removed afterwards unless `keep`).
        uri: an existing MongoDB (default: an embedded secantusd-py in the work folder).
        workers: `RECSYS_DASK_WORKERS` of the Dask run (a LocalCluster of that many workers).
        partitions: `RECSYS_PARTITIONS` of the Dask run (default: the settings', 2 per worker).
        address: `RECSYS_DASK_ADDRESS`: an existing cluster instead of a LocalCluster.
        keep: keep the temp work folder.
        echo: progress lines go here.

    Raises:
        RuntimeError: a run failed (its log is in `<work>/bench.log`).
    """
    results_dir.mkdir(parents=True, exist_ok=True)
    stem = results_dir / f"dask-scaling-{size.name}"
    with work_folder(work, prefix=f"recsys-dask-{size.name}-", keep=keep) as work_dir, \
            mongodb(work_dir, uri) as mongo_uri:
        log_file = work_dir / "bench.log"
        results: dict[str, Any] = {
            "size": asdict(size), "seed": SEED, "machine": machine_info(),
            "work_dir": str(work_dir),
            "started_at": datetime.now(UTC).isoformat(timespec="seconds"),
            "command": f"python -m bench dask-scaling --size {size.name} --workers {workers}",
            "mongodb": "external" if uri else "embedded secantusd-py", "runs": {}}
        echo(f"[{datetime.now(UTC):%H:%M:%S}] {size.name}: generate ...")
        results["generate"] = round_floats(run_child(
            "bench.phases.generate_batch", ["generate", str(work_dir), size.to_json(),
                                            mongo_uri], log_file=log_file))
        for runner in RUNNERS:
            shutil.rmtree(work_dir / runner, ignore_errors=True)  # no store or cache of a rerun
            env = runner_env(runner, work_dir, mongo_uri, workers=workers,
                             partitions=partitions, address=address)
            _drop_database(mongo_uri, f"{DB_NAME}_{runner}")
            echo(f"[{datetime.now(UTC):%H:%M:%S}] {size.name}: the pipeline on the {runner} "
                 "runner ...")
            results["runs"][runner] = round_floats(run_child(
                "bench.phases.run_pipeline", [runner, str(work_dir), size.to_json(), mongo_uri],
                log_file=log_file, env=env))
            echo(f"    {results['runs'][runner]['seconds']:.1f} s")
        results["comparison"] = round_floats(compare(results["runs"]))
        results["same_metrics"] = (results["runs"]["local"]["als_metrics"]
                                   == results["runs"]["dask"]["als_metrics"])
        results["finished_at"] = datetime.now(UTC).isoformat(timespec="seconds")
        Path(f"{stem}.json").write_text(json.dumps(results, indent=2) + "\n")
        Path(f"{stem}.md").write_text(markdown(results))
    return results


def _drop_database(uri: str, name: str) -> None:
    """Empty the run's database: a version left by an earlier run must not make it a no-op."""
    client: MongoClient = MongoClient(uri)
    try:
        client.drop_database(name)
    finally:
        client.close()


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The `python -m bench dask-scaling` command line."""
    parser = argparse.ArgumentParser(
        prog="python -m bench dask-scaling",
        description="The pipeline on the local runner beside the Dask runner, per stage.")
    parser.add_argument("--size", choices=sorted(SIZES), default="medium",
                        help="small (100k interactions), medium (5M, the default) or large "
                             "(50M)")
    parser.add_argument("--workers", type=int, default=2,
                        help="Dask workers of the LocalCluster (RECSYS_DASK_WORKERS)")
    parser.add_argument("--partitions", type=int, default=None,
                        help="user partitions of the Dask run (default: 2 per worker)")
    parser.add_argument("--address", default=None,
                        help="an existing Dask scheduler (tcp://host:8786) instead of a "
                             "LocalCluster")
    parser.add_argument("--out", type=Path, default=None,
                        help="where dask-scaling-<size>.json and .md go (default: "
                             "<RECSYS_DATA_DIR>/bench)")
    parser.add_argument("--work", type=Path, default=None,
                        help="work folder (default: a temp dir, removed afterwards unless "
                             "--keep)")
    parser.add_argument("--uri", default=None,
                        help="an existing MongoDB (default: an embedded secantusd-py in the "
                             "work folder)")
    parser.add_argument("--keep", action="store_true", help="keep the temp work folder")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    """`python -m bench dask-scaling`: run both runners and print the comparison."""
    args = parse_args(argv)
    out = results_dir(args.out, load_settings())
    try:
        results = run_scaling(SIZES[args.size], results_dir=out, work=args.work, uri=args.uri,
                              workers=args.workers, partitions=args.partitions,
                              address=args.address, keep=args.keep)
    except RuntimeError as error:
        raise SystemExit(f"error: {error}") from None
    print(f"\nresults: {out}/dask-scaling-{args.size}.json, .md\n")
    print(markdown(results))


if __name__ == "__main__":
    main()
