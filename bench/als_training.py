"""Training benchmarks: our train + score stages and ALS wrappers vs bare implicit calls, and the
ML100k search table.

Three modes:

    # the issue-14 goal: train_run_model + score_run_model (holdout fit, evaluation, warm-started
    # fit on all data, top-N, similar items, explanations, every file written) against a bare
    # implicit fit + recommend(all users, N=top_n) with the same parameters, same run, per size
    python -m bench training stage --interactions 1000000 5000000

    # fit + recommend-all-users (+ explanations) at N generated interactions; the issue's size
    # is 50M (needs ~20 GB free RAM and about an hour on 2 cores)
    python -m bench training scale --interactions 50000000 --users 1000000 --items 100000

    # the hyperparameter search on MovieLens 100K (issue protocol), as a markdown trial table
    python -m bench training search ../shared/datasets/ml-100k

`scale` generates a batch with `recsys.datagen.generate_batch`, builds the users x items matrix
(confidence = rating, duplicates summed), then times on the SAME matrix and parameters:
  - fit:       `training.model.fit_als`        vs `AlternatingLeastSquares(...).fit(matrix)`
  - recommend: `training.model.recommend_top_n` vs one `model.recommend(all users, matrix, N)`
  - explain:   `training.explain.explain_recommendations` (no bare equivalent: implicit's
               `explain` is one Python call per user-item; its per-call time is extrapolated)
BLAS is limited to one thread everywhere (threadpoolctl; environment variables are not always
enough, benfred/implicit#689).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import scipy.sparse as sp
from implicit.cpu.als import AlternatingLeastSquares
from threadpoolctl import threadpool_limits

from bench.phases.train_model import bare_fit_recommend
from features.snapshot import Manifest, ViewSnapshot
from recsys.datagen import generate_batch
from recsys.settings import Settings, load_settings
from training.data import build_matrix, load_interactions, to_csr
from training.explain import explain_recommendations
from training.model import AlsParams, apply_weighting, fit_als, recommend_top_n
from training.search import SearchSpace, search_and_evaluate
from training.stage import score_run_model, train_run_model

log = logging.getLogger("bench.als_training")


def _matrix_from_batch(directory: Path) -> sp.csr_matrix:
    table = pq.read_table(directory / "interactions.parquet", columns=["user_id", "item_id",
                                                                        "rating"])
    users = table.column("user_id").combine_chunks().dictionary_encode()
    items = table.column("item_id").combine_chunks().dictionary_encode()
    weights = pc.fill_null(table.column("rating"), 1.0).to_numpy()
    coo = sp.coo_matrix((weights.astype(np.float32),
                         (users.indices.to_numpy(), items.indices.to_numpy())),
                        shape=(len(users.dictionary), len(items.dictionary)))
    return to_csr(coo)


def write_interactions_snapshot(work: Path, *, interactions: int, seed: int = 42) -> Manifest:
    """A feature snapshot of `interactions` generated interactions (users = N/50, items = N/250,
    the bench sizes' shape; weight = rating) as the train and score stages read it: an
    interactions parquet file and its Manifest (not written to disk: the stages take it)."""
    generated = generate_batch(work / "batch", users=max(interactions // 50, 1),
                               items=max(interactions // 250, 10), interactions=interactions,
                               seed=seed)
    table = pq.read_table(generated.directory / "interactions.parquet",
                          columns=["user_id", "item_id", "rating"])
    path = work / "features" / "interactions" / "data.parquet"
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.table({"user_id": table["user_id"], "item_id": table["item_id"],
                             "weight": pc.fill_null(table["rating"], 1.0).cast(pa.float64())}),
                   path)
    return Manifest(snapshot_id="bench", created_at=datetime.now(UTC).isoformat(), as_of=None,
                    duckdb_version="-", sources={"interactions": {"path": str(path)}},
                    views={"interactions": ViewSnapshot(name="interactions", path=str(path),
                                                        rows=table.num_rows, schema=[])})


def stage(args: argparse.Namespace) -> dict[str, Any]:
    """Our train + score stages against a bare fit + recommend, in the same run, per size."""
    rows = []
    for interactions in args.interactions:
        with tempfile.TemporaryDirectory(dir=args.tmp, prefix="bench-training-") as tmp:
            work = Path(tmp)
            manifest = write_interactions_snapshot(work, interactions=interactions)
            settings = load_settings(data_dir=work / "data")
            matrix = load_interactions(manifest.view_path("interactions")).matrix
            for repeat in range(args.repeat):
                load_before = os.getloadavg()[0]
                bare = bare_fit_recommend(matrix, settings)
                started = time.perf_counter()
                model_dir, result = train_run_model(manifest, version=f"v{repeat}",
                                                    settings=settings, search=False)
                train_s = time.perf_counter() - started
                started = time.perf_counter()
                score_run_model(model_dir, manifest, settings=settings)
                score_s = time.perf_counter() - started
                bare_s = bare["fit_s"] + bare["recommend_s"]
                rows.append({
                    "interactions": interactions, "nnz": int(matrix.nnz),
                    "users": int(matrix.shape[0]), "items": int(matrix.shape[1]),
                    "bare_fit_s": round(bare["fit_s"], 2),
                    "bare_recommend_s": round(bare["recommend_s"], 2),
                    "train_s": round(train_s, 2), "score_s": round(score_s, 2),
                    "train_timings": result.metrics["timings"],
                    "ratio": round((train_s + score_s) / bare_s, 3),
                    "load_average": [round(load_before, 2), round(os.getloadavg()[0], 2)],
                    "ndcg@10": round(result.metrics["als"][f"ndcg@{settings.eval_k}"], 4)})
                log.info("%s", rows[-1])
    print(f"\n{'interactions':>12} {'users x items':>15} {'bare fit':>9} {'bare rec':>9} "
          f"{'train':>8} {'score':>8} {'ratio':>6}  load average (before, after)")
    for row in rows:
        print(f"{row['interactions']:>12,} {row['users']:>7,} x {row['items']:<6,} "
              f"{row['bare_fit_s']:>8.1f}s {row['bare_recommend_s']:>8.1f}s "
              f"{row['train_s']:>7.1f}s {row['score_s']:>7.1f}s {row['ratio']:>6.2f}  "
              f"{row['load_average']}")
    settings = load_settings()
    return {"machine": platform.machine(), "cores": os.cpu_count(),
            "params": {k: getattr(settings, k) for k in (
                "factors", "regularization", "alpha", "iterations", "refit_iterations", "top_n",
                "similar_n", "explain_n", "eval_max_users")},
            "runs": rows}


def _timed(fn: Any) -> tuple[Any, float]:
    start = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - start


def scale(args: argparse.Namespace) -> dict[str, Any]:
    """Fit, recommend (and explain) timings of our wrappers and of bare implicit, same matrix."""
    params = AlsParams(factors=args.factors, regularization=args.regularization, alpha=args.alpha,
                       iterations=args.iterations, seed=42)
    with tempfile.TemporaryDirectory(dir=args.tmp) as tmp:
        (_, gen_s) = _timed(lambda: generate_batch(Path(tmp), users=args.users, items=args.items,
                                                   interactions=args.interactions, seed=42))
        matrix, load_s = _timed(lambda: _matrix_from_batch(Path(tmp)))
    log.info("matrix %s with %d nnz (generate %.1fs, load %.1fs)", matrix.shape, matrix.nnz,
             gen_s, load_s)

    ours, fit_ours = _timed(lambda: fit_als(matrix, params, num_threads=args.threads))

    def bare_fit() -> AlternatingLeastSquares:
        with threadpool_limits(1, "blas"):
            model = AlternatingLeastSquares(factors=params.factors,
                                            regularization=params.regularization,
                                            alpha=params.alpha, iterations=params.iterations,
                                            random_state=42, num_threads=args.threads)
            model.fit(matrix, show_progress=False)
        return model

    bare, fit_bare = _timed(bare_fit)
    (recs, _), rec_ours = _timed(lambda: recommend_top_n(ours, matrix, args.top_n))

    def bare_recommend() -> np.ndarray:
        with threadpool_limits(1, "blas"):
            ids, _ = bare.recommend(np.arange(matrix.shape[0], dtype=np.int32), matrix,
                                    N=args.top_n, filter_already_liked_items=True)
        return ids

    _, rec_bare = _timed(bare_recommend)
    result: dict[str, Any] = {
        "interactions_generated": args.interactions, "nnz": int(matrix.nnz),
        "users": int(matrix.shape[0]), "items": int(matrix.shape[1]), "params": params.to_dict(),
        "top_n": args.top_n, "threads": args.threads, "machine": platform.machine(),
        "fit_ours_s": round(fit_ours, 2), "fit_bare_s": round(fit_bare, 2),
        "fit_ratio": round(fit_ours / fit_bare, 3),
        "recommend_ours_s": round(rec_ours, 2), "recommend_bare_s": round(rec_bare, 2),
        "recommend_ratio": round(rec_ours / rec_bare, 3),
    }
    if args.explain:
        confidence = to_csr(apply_weighting(matrix, params.weighting) * params.alpha)
        _, explain_s = _timed(lambda: explain_recommendations(
            ours.item_factors, confidence, recs, regularization=params.regularization,
            n_explain=3))
        sample = np.random.default_rng(0).integers(0, matrix.shape[0], size=20)
        weighted = apply_weighting(matrix, params.weighting)

        def bare_explain() -> None:
            with threadpool_limits(1, "blas"):
                for user in sample:   # implicit's API: one call per (user, item)
                    for item in recs[user, :5]:
                        ours.explain(int(user), weighted, int(item), N=3)

        _, sample_s = _timed(bare_explain)
        per_call = sample_s / (len(sample) * 5)
        result.update({"explain_ours_s": round(explain_s, 2),
                       "explain_bare_per_call_ms": round(per_call * 1000, 3),
                       "explain_bare_extrapolated_s": round(per_call * recs.size, 1)})
    return result


def search(args: argparse.Namespace) -> dict[str, Any]:
    """The hyperparameter search on MovieLens 100K; prints its trial table."""
    raw = np.loadtxt(Path(args.movielens_dir) / "u.data", dtype=np.int64)
    data = build_matrix(raw[:, 0].astype(str).astype(object), raw[:, 1].astype(str).astype(object),
                        raw[:, 2].astype(np.float64))
    space = SearchSpace.from_file(args.space) if args.space else SearchSpace()
    (result, found), seconds = _timed(lambda: search_and_evaluate(
        data, space, seed=args.seed, k=10, holdout_fraction=0.25, objective=args.objective))
    print(found.trials_markdown())
    return {"seed": args.seed, "objective": found.objective, "chosen": found.best.to_dict(),
            "seconds": round(seconds, 1), "test": result.metrics["als"],
            "popular": result.metrics["popular"]}


def main(argv: list[str] | None = None) -> None:
    """`python -m bench training scale|search ...`: print the figures as JSON."""
    parser = argparse.ArgumentParser(prog="python -m bench training",
                                     description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="mode", required=True)
    t = sub.add_parser("stage", help="train + score stages vs bare fit + recommend")
    t.add_argument("--interactions", type=int, nargs="+", default=[1_000_000, 5_000_000])
    t.add_argument("--repeat", type=int, default=1, help="runs per size (each with its bare)")
    t.add_argument("--tmp", type=Path, default=None, help="where to generate the data")
    s = sub.add_parser("scale", help="fit / recommend timings vs bare implicit")
    s.add_argument("--interactions", type=int, default=50_000_000)
    s.add_argument("--users", type=int, default=1_000_000)
    s.add_argument("--items", type=int, default=100_000)
    s.add_argument("--factors", type=int, default=64)
    s.add_argument("--regularization", type=float, default=50.0)
    s.add_argument("--alpha", type=float, default=2.0)
    s.add_argument("--iterations", type=int, default=15)
    s.add_argument("--top-n", type=int, default=50)
    s.add_argument("--threads", type=int, default=0, help="implicit threads (0 = all cores)")
    s.add_argument("--explain", action="store_true", help="also time explanations (E=3)")
    s.add_argument("--tmp", type=Path, default=None, help="where to generate the batch")
    q = sub.add_parser("search", help="the ML100k search and its trial table")
    q.add_argument("movielens_dir", type=Path)
    q.add_argument("--space", type=Path, default=None, help="JSON search space")
    q.add_argument("--seed", type=int, default=42)
    q.add_argument("--objective", default="ndcg")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    out = {"stage": stage, "scale": scale, "search": search}[args.mode](args)
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
