"""Partitioned scoring through the real stage: `score_run_model` with P user partitions run by
a mapper of W workers (serial, a process pool, a Dask LocalCluster).

    python -m bench partitioned-scoring                         # 1M interactions, W = 1 2 4
    python -m bench partitioned-scoring --interactions 5000000 --workers 1 2 4 --dask \\
        --json data/bench/partitioned_scoring.json

What it does:
  1. Generates N interactions (`bench.als_training.write_interactions_snapshot`) and trains one
     model with the pipeline's `train_run_model` (`--iterations`, default 3: scoring is measured,
     not fitting).
  2. Scores that model with `training.stage.score_run_model` -- the parts are the real
     `training.scoring.score_part` (top-N, explanations, similar items), each writing its file
     through `training.scores` -- once per configuration:
       - serial: `recsys.partitions.serial_map`, one partition (the local runner);
       - pool W: P = 2 W partitions on a `ProcessPoolExecutor` of W spawned processes, each held
         to one BLAS / OpenMP thread;
       - dask W (`--dask`): P = 2 W partitions on a `distributed.LocalCluster` of W worker
         processes with one thread each, through `dask_map` (a mapper: `client.map` +
         `client.gather`, what the flow's Dask mapper does without Prefect's task layer).
     Each timing includes starting the workers and every worker loading the model once (that is
     the cost of fanning out); the cluster / pool start-up alone is also reported.
  3. Checks that every configuration's `load_scores` equals the serial one exactly.

Workers beyond the machine's cores share those cores, so W > cores cannot speed anything up; the
output says so next to those rows.
"""

from __future__ import annotations

import argparse
import json
import logging
import multiprocessing
import os
import platform
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
from threadpoolctl import threadpool_limits

from bench.als_training import write_interactions_snapshot
from recsys.partitions import Mapper, serial_map
from recsys.settings import load_settings
from training.scores import load_scores
from training.stage import score_run_model, train_run_model

log = logging.getLogger("bench.partitioned_scoring")


def _one_thread() -> None:
    """Worker initializer: one thread for every BLAS / OpenMP pool of this process."""
    threadpool_limits(limits=1)


def _pid(_: int) -> int:
    return os.getpid()


@contextmanager
def pool_mapper(workers: int) -> Iterator[Mapper]:
    """A mapper over a pool of `workers` spawned processes (started before it is yielded)."""
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(workers, mp_context=context, initializer=_one_thread) as pool:
        list(pool.map(_pid, range(workers)))  # start the processes now

        def mapper(label: str, fn: Callable[..., Any], args_list: Sequence[tuple[Any, ...]]
                   ) -> list[Any]:
            return list(pool.map(fn, *zip(*args_list, strict=True)))

        yield mapper


@contextmanager
def dask_mapper(workers: int) -> Iterator[Mapper]:
    """A mapper over a `distributed.LocalCluster` of `workers` one-thread worker processes."""
    from distributed import Client, LocalCluster  # optional, heavy: only for --dask

    with LocalCluster(n_workers=workers, threads_per_worker=1, processes=True,
                      dashboard_address=None) as cluster, Client(cluster) as client:
        client.run(_one_thread)

        def mapper(label: str, fn: Callable[..., Any], args_list: Sequence[tuple[Any, ...]]
                   ) -> list[Any]:
            futures = client.map(fn, *zip(*args_list, strict=True), key=[
                f"{label}-{i}" for i in range(len(args_list))], pure=False)
            return client.gather(futures)

        yield mapper


@contextmanager
def serial_mapper(workers: int) -> Iterator[Mapper]:
    yield serial_map


RUNNERS = {"serial": serial_mapper, "pool": pool_mapper, "dask": dask_mapper}


def main(argv: list[str] | None = None) -> None:
    """`python -m bench partitioned-scoring`: print the figures (and write them to `--json`)."""
    parser = argparse.ArgumentParser(prog="python -m bench partitioned-scoring",
                                     description=__doc__.splitlines()[0])
    parser.add_argument("--interactions", type=int, default=1_000_000)
    parser.add_argument("--iterations", type=int, default=3, help="ALS sweeps of the model")
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2, 4])
    parser.add_argument("--dask", action="store_true", help="also run on Dask LocalClusters")
    parser.add_argument("--tmp", type=Path, default=None, help="where to generate the data")
    parser.add_argument("--json", type=Path, default=None, help="also write the result here")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")

    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    configs = [("serial", 1), *(("pool", w) for w in args.workers)]
    if args.dask:
        configs += [("dask", w) for w in args.workers]
    runs: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="partitioned-scoring-", dir=args.tmp) as tmp:
        manifest = write_interactions_snapshot(Path(tmp), interactions=args.interactions)
        settings = load_settings(data_dir=Path(tmp) / "data", iterations=args.iterations)
        model_dir, _ = train_run_model(manifest, version="bench", settings=settings,
                                       search=False)
        reference: dict[str, np.ndarray] | None = None
        for runner, workers in configs:
            partitions = 1 if runner == "serial" else 2 * workers
            load_before = os.getloadavg()[0]
            started = time.perf_counter()
            with RUNNERS[runner](workers) as mapper:
                startup_s = time.perf_counter() - started
                score_run_model(model_dir, manifest, settings=settings.model_copy(
                    update={"partitions": partitions}), mapper=mapper)
                scored_s = time.perf_counter() - started
            scores = load_scores(model_dir)
            if reference is None:
                reference = scores
            same = all(np.array_equal(scores[k], reference[k]) for k in reference)
            runs.append({"runner": runner, "workers": workers, "partitions": partitions,
                         "seconds": round(scored_s, 2), "startup_s": round(startup_s, 2),
                         "same_as_serial": same, "load_average": round(load_before, 2),
                         "note": f"W > {cores} cores" if workers > cores else ""})
            log.info("%s", runs[-1])
    base = runs[0]["seconds"]
    print(f"\n{args.interactions:,} interactions, top {settings.top_n}, explain "
          f"{settings.explain_n}, similar {settings.similar_n}; {cores} CPU cores")
    print(f"{'runner':>7} {'W':>3} {'P':>3} {'seconds':>8} {'start-up':>9} {'speed-up':>9} "
          f"{'same':>5} {'load':>5}  note")
    for run in runs:
        run["speedup"] = round(base / run["seconds"], 2)
        print(f"{run['runner']:>7} {run['workers']:>3} {run['partitions']:>3} "
              f"{run['seconds']:>8.1f} {run['startup_s']:>9.1f} {run['speedup']:>9.2f} "
              f"{run['same_as_serial']!s:>5} {run['load_average']:>5.1f}  {run['note']}")
    result = {"interactions": args.interactions, "cores": cores, "machine": platform.machine(),
              "runs": runs}
    print(json.dumps(result, indent=2))
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=2) + "\n")
    if not all(run["same_as_serial"] for run in runs):
        raise SystemExit("partitioned scores differ from the serial ones")


if __name__ == "__main__":
    main()
