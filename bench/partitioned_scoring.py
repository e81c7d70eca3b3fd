"""Partitioned all-users scoring with W local worker processes: a scale-out simulation.

    python -m bench partitioned-scoring                       # 1M users x 100k items x 32
    python -m bench partitioned-scoring --users 200000 --items 20000 --workers 1 2 4 \\
        --json data/bench/partitioned_scoring.json

What it does, in the shape a fanned-out scoring flow would have (docs/scaling.md):
  1. Random float32 factors and a random seen-items CSR (`bench.gpu_scoring.random_factors` /
     `random_seen`) are written once as .npy files to a work folder (`--work`, default a temp
     folder) and opened read-only with `np.load(mmap_mode="r")` by every process: the workers
     share the operating system's page cache instead of each holding a copy.
  2. Users are split into P partitions by a hash of the user id: splitmix64 of the integer index,
     partition = floor(hash * P / 2^64), i.e. P equal ranges of a uniform 64-bit hash. That is how
     a MongoDB collection sharded on `{_id: "hashed"}` assigns documents to chunks (ranges of the
     64-bit hashed value); MongoDB's own hash is MD5-based over the BSON value, so to line
     partitions up with real chunks, swap `partition_of` for that hash -- the balance is the same.
  3. For each W, a pool of W spawned processes (each limited to one BLAS/OpenMP thread with
     threadpoolctl, implicit's `num_threads=1`) scores the P partitions, largest first, each with
     the real `training.model.recommend_top_n` on an implicit CPU model built over the memory
     maps, and writes its rows straight into a shared output memmap (as a real worker would write
     its shard's documents). Timing starts once every worker has started, imported and opened the
     maps (a barrier; start-up is reported apart) and ends when the last partition is written.
  4. Checks: every W's output equals the first W's (same item sets, score gap), and a sample of
     users equals an unpartitioned `recommend_top_n`.

Prints a table (wall time, users/s, speed-up vs the first W, parallel efficiency = speed-up / W,
the workers' CPU seconds and the cores they actually got = CPU s / wall s) and one JSON object
(also written to `--json PATH`). Workers beyond the machine's cores share those cores,
so W > cores cannot speed anything up; the output says so next to those rows.
"""

from __future__ import annotations

import argparse
import json
import logging
import multiprocessing as mp
import os
import platform
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import scipy.sparse as sp
from threadpoolctl import threadpool_limits

from bench.gpu_scoring import als_from_factors, compare, random_factors, random_seen
from training.model import recommend_top_n

log = logging.getLogger("bench.partitioned_scoring")

ARRAYS = ("user_factors", "item_factors", "seen_indptr", "seen_indices", "seen_data",
          "partition_users", "partition_offsets")
SPOT_CHECK_USERS = 2000


def splitmix64(values: np.ndarray) -> np.ndarray:
    """splitmix64's finaliser of uint64 values (vectorised; uint64 arithmetic wraps mod 2^64)."""
    z = values.astype(np.uint64) + np.uint64(0x9E3779B97F4A7C15)
    z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return z ^ (z >> np.uint64(31))


def partition_of(user_index: np.ndarray, partitions: int) -> np.ndarray:
    """Partition of each user: which of `partitions` equal ranges of the 64-bit hash it falls in."""
    if not 1 <= partitions < 2**32:
        raise ValueError(f"partitions must be in [1, 2^32), got {partitions}")
    high = splitmix64(user_index) >> np.uint64(32)            # top 32 bits of the hash
    return ((high * np.uint64(partitions)) >> np.uint64(32)).astype(np.int64)


def write_inputs(work: Path, *, users: int, items: int, factors: int, seen_per_user: float,
                 partitions: int, seed: int) -> dict[str, Any]:
    """The random model, the seen CSR and the partitioning, as .npy files under `work`."""
    rng = np.random.default_rng(seed)
    start = time.perf_counter()
    seen = random_seen(users, items, seen_per_user, rng)
    part = partition_of(np.arange(users, dtype=np.uint64), partitions)
    order = np.argsort(part, kind="stable").astype(np.int32)   # users by partition, then index
    sizes = np.bincount(part, minlength=partitions)
    arrays = {"user_factors": random_factors(users, factors, rng),
              "item_factors": random_factors(items, factors, rng),
              "seen_indptr": seen.indptr, "seen_indices": seen.indices, "seen_data": seen.data,
              "partition_users": order,
              "partition_offsets": np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64)}
    for name in ARRAYS:
        np.save(work / f"{name}.npy", arrays[name])
    log.info("inputs written to %s in %.1fs: %d seen pairs, partition sizes %d..%d", work,
             time.perf_counter() - start, seen.nnz, sizes.min(), sizes.max())
    return {"seen_pairs": int(seen.nnz), "partition_size_min": int(sizes.min()),
            "partition_size_max": int(sizes.max()), "generate_s": time.perf_counter() - start}


def open_inputs(work: Path) -> tuple[Any, sp.csr_matrix, dict[str, np.ndarray]]:
    """A one-thread implicit model and the seen CSR over read-only memory maps of `work`."""
    maps = {name: np.load(work / f"{name}.npy", mmap_mode="r") for name in ARRAYS}
    model = als_from_factors(maps["user_factors"], maps["item_factors"], num_threads=1)
    shape = (maps["user_factors"].shape[0], maps["item_factors"].shape[0])
    seen = sp.csr_matrix((maps["seen_data"], maps["seen_indices"], maps["seen_indptr"]),
                         shape=shape, copy=False)
    return model, seen, maps


# State of one worker process, set once by `_start_worker`.
_WORKER: dict[str, Any] = {}


def _start_worker(work: str, output_prefix: str, top_n: int, batch_size: int,
                  ready: Any) -> None:
    # one thread per process for every BLAS / OpenMP pool, for the process's whole life
    _WORKER["limits"] = threadpool_limits(limits=1)
    model, seen, maps = open_inputs(Path(work))
    _WORKER.update(model=model, seen=seen, maps=maps, top_n=top_n, batch_size=batch_size,
                   out_items=np.load(f"{output_prefix}_items.npy", mmap_mode="r+"),
                   out_scores=np.load(f"{output_prefix}_scores.npy", mmap_mode="r+"))
    ready.wait()


def _score_partition(partition: int) -> dict[str, Any]:
    """Score one partition's users and write their rows into the shared output."""
    start, cpu_start = time.perf_counter(), time.process_time()
    offsets = _WORKER["maps"]["partition_offsets"]
    users = np.asarray(_WORKER["maps"]["partition_users"][offsets[partition]:
                                                          offsets[partition + 1]])
    items, scores = recommend_top_n(_WORKER["model"], _WORKER["seen"], _WORKER["top_n"],
                                    batch_size=_WORKER["batch_size"], users=users)
    _WORKER["out_items"][users] = items
    _WORKER["out_scores"][users] = scores
    return {"partition": partition, "users": int(users.size), "pid": os.getpid(),
            "seconds": time.perf_counter() - start, "cpu_s": time.process_time() - cpu_start}


def run_workers(work: Path, workers: int, *, partitions: int, top_n: int,
                batch_size: int) -> dict[str, Any]:
    """Score every partition with `workers` processes; the output goes to work/out_w{W}_*.npy."""
    n_users = np.load(work / "user_factors.npy", mmap_mode="r").shape[0]
    prefix = work / f"out_w{workers}"
    np.lib.format.open_memmap(f"{prefix}_items.npy", mode="w+", dtype=np.int32,
                              shape=(n_users, top_n)).flush()
    np.lib.format.open_memmap(f"{prefix}_scores.npy", mode="w+", dtype=np.float32,
                              shape=(n_users, top_n)).flush()
    offsets = np.load(work / "partition_offsets.npy")
    largest_first = [int(p) for p in np.argsort(-np.diff(offsets), kind="stable")]
    ctx = mp.get_context("spawn")  # fresh processes: they see the data only through the maps
    ready = ctx.Barrier(workers + 1)
    start = time.perf_counter()
    with ctx.Pool(workers, initializer=_start_worker,
                  initargs=(str(work), str(prefix), top_n, batch_size, ready)) as pool:
        ready.wait()
        startup_s = time.perf_counter() - start
        start = time.perf_counter()
        done = list(pool.imap_unordered(_score_partition, largest_first, chunksize=1))
        wall_s = time.perf_counter() - start
    busy = sum(d["seconds"] for d in done)
    cpu = sum(d["cpu_s"] for d in done)
    # cores_used: CPU seconds the workers got per wall second; below W when the cores are
    # fewer than the workers or busy with other work
    return {"workers": workers, "wall_s": wall_s, "startup_s": startup_s,
            "users_per_s": n_users / wall_s, "busy_s": busy, "cpu_s": cpu,
            "cores_used": cpu / wall_s,
            "partition_s_max": max(d["seconds"] for d in done),
            "processes_used": len({d["pid"] for d in done})}


def check_outputs(work: Path, workers: list[int], *, top_n: int, seed: int) -> dict[str, Any]:
    """Every W's output against the first W's, and a sample against unpartitioned scoring."""
    def output(w: int) -> tuple[np.ndarray, np.ndarray]:
        prefix = work / f"out_w{w}"
        return (np.load(f"{prefix}_items.npy", mmap_mode="r"),
                np.load(f"{prefix}_scores.npy", mmap_mode="r"))

    reference = output(workers[0])
    checks: dict[str, Any] = {f"w{w}_vs_w{workers[0]}": compare(*output(w), *reference)
                              for w in workers[1:]}
    model, seen, _ = open_inputs(work)
    rng = np.random.default_rng(seed + 1)
    sample = np.sort(rng.choice(seen.shape[0], size=min(SPOT_CHECK_USERS, seen.shape[0]),
                                replace=False)).astype(np.int32)
    expected = recommend_top_n(model, seen, top_n, users=sample)
    checks["sample_vs_unpartitioned"] = compare(reference[0][sample], reference[1][sample],
                                                *expected)
    return checks


def main(argv: list[str] | None = None) -> None:
    """`python -m bench partitioned-scoring`: print the figures (and write them to `--json`)."""
    parser = argparse.ArgumentParser(prog="python -m bench partitioned-scoring",
                                     description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, default=1_000_000)
    parser.add_argument("--items", type=int, default=100_000)
    parser.add_argument("--factors", type=int, default=32)
    parser.add_argument("--top-n", type=int, default=50)
    parser.add_argument("--seen-per-user", type=float, default=20.0,
                        help="mean items per user in the seen-items CSR")
    parser.add_argument("--partitions", type=int, default=16, help="hash partitions P")
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2, 4],
                        help="worker counts W to run, the first is the speed-up baseline")
    parser.add_argument("--batch-size", type=int, default=10_000,
                        help="users per recommend call inside a partition")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--work", type=Path, default=None,
                        help="folder for the memory-mapped inputs/outputs (default: a temp dir)")
    parser.add_argument("--json", type=Path, default=None, help="also write the result here")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")

    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    with tempfile.TemporaryDirectory(prefix="partitioned-scoring-", dir=args.work) as tmp:
        work = Path(tmp)
        inputs = write_inputs(work, users=args.users, items=args.items, factors=args.factors,
                              seen_per_user=args.seen_per_user, partitions=args.partitions,
                              seed=args.seed)
        load_before = os.getloadavg()[0]
        runs = []
        for workers in args.workers:
            run = run_workers(work, workers, partitions=args.partitions, top_n=args.top_n,
                              batch_size=args.batch_size)
            log.info("W=%d: %.1fs (start-up %.1fs)", workers, run["wall_s"], run["startup_s"])
            runs.append(run)
        checks = check_outputs(work, args.workers, top_n=args.top_n, seed=args.seed)

    base = runs[0]
    for run in runs:
        run["speedup"] = base["wall_s"] / run["wall_s"]
        run["efficiency"] = run["speedup"] / (run["workers"] / base["workers"])
        run["note"] = (f"W > {cores} cores: workers share the cores, no speed-up possible"
                       if run["workers"] > cores else "")
    result = {"users": args.users, "items": args.items, "factors": args.factors,
              "top_n": args.top_n, "partitions": args.partitions, "batch_size": args.batch_size,
              "cores": cores, "machine": platform.machine(),
              "load_average_before": round(load_before, 2),
              **{k: (round(v, 2) if isinstance(v, float) else v) for k, v in inputs.items()},
              "runs": [{k: (round(v, 3) if isinstance(v, float) else v) for k, v in run.items()}
                       for run in runs],
              "checks": checks}

    print(f"\n{args.users:,} users x {args.items:,} items x {args.factors} factors, top "
          f"{args.top_n}, {args.partitions} hash partitions, {cores} CPU cores "
          f"(load average {load_before:.2f} before the runs)")
    print(f"{'W':>3} {'wall s':>8} {'users/s':>9} {'speed-up':>9} {'efficiency':>10} "
          f"{'CPU s':>7} {'cores used':>10}  note")
    for run in runs:
        print(f"{run['workers']:>3} {run['wall_s']:>8.1f} {run['users_per_s']:>9,.0f} "
              f"{run['speedup']:>9.2f} {run['efficiency']:>10.2f} {run['cpu_s']:>7.1f} "
              f"{run['cores_used']:>10.2f}  {run['note']}")
    print(json.dumps(result, indent=2))
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
