"""Micro benchmark: all-users top-N on the CPU (`recommend_top_n`) vs the torch path.

    python -m bench gpu-scoring --users 100000 --items 20000 --factors 32
    python -m bench gpu-scoring --users 1000000 --items 100000 --device cuda --skip-cpu

Random float32 factors (standard normal / sqrt(factors)) and a random seen-items CSR (geometric
number of items per user, mean `--seen-per-user`, uniform items) stand in for a trained model; the
cost of scoring depends only on the shapes and the CSR's size, not on what the factors mean.

Timed on the same inputs:
  - cpu:   `training.model.recommend_top_n` (implicit's CPU `recommend`, batches of 10,000 users,
           BLAS limited to one thread, implicit's threads = all cores)
  - torch: `training.gpu_scoring.top_n_from_factors` on `--device` (default: "cuda" when torch sees
           a GPU, else "cpu"; the output says which), after a warm-up batch (CUDA context, kernels)
Then the two outputs are compared: share of users with the same item set, largest score gap.
Prints one JSON object (also written to `--json PATH`).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import time
from pathlib import Path
from typing import Any

import numpy as np
import scipy.sparse as sp
from implicit.cpu.als import AlternatingLeastSquares
from threadpoolctl import threadpool_limits

from training.data import to_csr
from training.gpu_scoring import (
    DEFAULT_BATCH_SIZE,
    import_torch,
    resolve_device,
    top_n_from_factors,
)
from training.model import recommend_top_n

log = logging.getLogger("bench.gpu_scoring")


def random_factors(n: int, factors: int, rng: np.random.Generator) -> np.ndarray:
    """(n, factors) float32 factors with dot products of order 1."""
    return (rng.standard_normal((n, factors), dtype=np.float32)
            / np.float32(np.sqrt(factors)))


def random_seen(users: int, items: int, seen_per_user: float,
                rng: np.random.Generator) -> sp.csr_matrix:
    """(users, items) float32/int32 CSR: a geometric count of uniform random items per user."""
    counts = np.minimum(rng.geometric(1.0 / max(seen_per_user, 1.0), size=users), items)
    rows = np.repeat(np.arange(users, dtype=np.int32), counts)
    cols = rng.integers(0, items, size=rows.size, dtype=np.int32)
    ones = np.ones(rows.size, dtype=np.float32)
    return to_csr(sp.coo_matrix((ones, (rows, cols)), shape=(users, items)))


def als_from_factors(user_factors: np.ndarray, item_factors: np.ndarray, *,
                     num_threads: int = 0) -> AlternatingLeastSquares:
    """An implicit CPU ALS model holding the given factors, as if it had been fitted.

    `num_threads` is implicit's own thread count for `recommend` (0 = all cores).
    """
    with threadpool_limits(1, "blas"):  # implicit's constructor warns about threaded BLAS
        model = AlternatingLeastSquares(factors=user_factors.shape[1], dtype=np.float32,
                                        num_threads=num_threads)
    model.user_factors = user_factors
    model.item_factors = item_factors
    return model


def compare(items_a: np.ndarray, scores_a: np.ndarray, items_b: np.ndarray,
            scores_b: np.ndarray) -> dict[str, float]:
    """Share of rows with the same item set, and the largest rank-by-rank score difference."""
    same_sets = np.all(np.sort(items_a, axis=1) == np.sort(items_b, axis=1), axis=1)
    return {"same_item_set_share": round(float(same_sets.mean()), 6),
            "max_score_diff": float(np.abs(scores_a - scores_b).max(initial=0.0))}


def run(args: argparse.Namespace) -> dict[str, Any]:
    rng = np.random.default_rng(args.seed)
    start = time.perf_counter()
    user_factors = random_factors(args.users, args.factors, rng)
    item_factors = random_factors(args.items, args.factors, rng)
    seen = random_seen(args.users, args.items, args.seen_per_user, rng)
    log.info("inputs: %d users x %d items x %d factors, %d seen pairs (%.1fs)", args.users,
             args.items, args.factors, seen.nnz, time.perf_counter() - start)
    torch = import_torch()
    device = resolve_device(args.device)
    result: dict[str, Any] = {
        "users": args.users, "items": args.items, "factors": args.factors, "top_n": args.top_n,
        "seen_pairs": int(seen.nnz), "batch_size": args.batch_size,
        "machine": platform.machine(), "cpus": os.cpu_count(), "torch": torch.__version__,
        "torch_device": str(device), "torch_threads": torch.get_num_threads(),
        "gpu": torch.cuda.get_device_name(device) if device.type == "cuda" else None,
    }

    warm = min(args.users, args.batch_size)
    top_n_from_factors(user_factors[:warm], item_factors, seen[:warm], args.top_n,
                       device=str(device), batch_size=args.batch_size)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    start = time.perf_counter()
    torch_items, torch_scores = top_n_from_factors(user_factors, item_factors, seen, args.top_n,
                                                   device=str(device),
                                                   batch_size=args.batch_size)
    torch_s = time.perf_counter() - start  # the results are on the host: nothing left queued
    result.update({"torch_s": round(torch_s, 3),
                   "torch_users_per_s": round(args.users / torch_s)})
    log.info("torch on %s: %.2fs", device, torch_s)

    if not args.skip_cpu:
        model = als_from_factors(user_factors, item_factors)
        start = time.perf_counter()
        cpu_items, cpu_scores = recommend_top_n(model, seen, args.top_n)
        cpu_s = time.perf_counter() - start
        log.info("cpu recommend_top_n: %.2fs", cpu_s)
        result.update({"cpu_s": round(cpu_s, 3), "cpu_users_per_s": round(args.users / cpu_s),
                       "speedup_torch_vs_cpu": round(cpu_s / torch_s, 2),
                       **compare(torch_items, torch_scores, cpu_items, cpu_scores)})
    return result


def main(argv: list[str] | None = None) -> None:
    """`python -m bench gpu-scoring`: print the figures (and write them to `--json`)."""
    parser = argparse.ArgumentParser(prog="python -m bench gpu-scoring",
                                     description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, default=100_000)
    parser.add_argument("--items", type=int, default=20_000)
    parser.add_argument("--factors", type=int, default=32)
    parser.add_argument("--top-n", type=int, default=50)
    parser.add_argument("--seen-per-user", type=float, default=40.0,
                        help="mean items per user in the seen-items CSR")
    parser.add_argument("--batch-size", type=int, default=DEFAULT_BATCH_SIZE,
                        help="users per torch batch (device memory ~ batch x items x 4 bytes)")
    parser.add_argument("--device", default=None,
                        help='torch device ("cuda", "cpu"); default: cuda when available')
    parser.add_argument("--skip-cpu", action="store_true", help="time the torch path only")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", type=Path, default=None, help="also write the result here")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    result = run(args)
    text = json.dumps(result, indent=2)
    print(text)
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(text + "\n")


if __name__ == "__main__":
    main()
