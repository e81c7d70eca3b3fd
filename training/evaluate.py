"""Offline evaluation: per-user random or chronological holdout, ranking metrics, popularity
baseline.

Metric definitions follow Microsoft Recommenders' `python_evaluation` (binary relevance, only users
with at least one test item are evaluated):

- precision@k = hits in top k / k
- recall@k = hits in top k / |relevant|
- ndcg@k = DCG / IDCG, DCG = sum over hits of 1 / log2(rank + 1) (rank 1-based), IDCG over
  min(|relevant|, k) positions
- map = sum over hits in top k of precision@rank, divided by |relevant| (not min(k, |relevant|))

Checked against recommenders-team/recommenders `recommenders/evaluation/python_evaluation.py`
(`merge_ranking_true_pred`, `precision_at_k`, `recall_at_k`, `ndcg_at_k` with score_type="binary",
`map`): their mean runs over the users present in both truth and predictions; every user we
evaluate has a prediction row, so that is the users with >= 1 test item. Their nDCG uses a natural
log discount by default, which cancels in DCG / IDCG. `map_at_k` (divide by min(k, |relevant|))
is a different metric; the issue and their benchmark table use `map`.

implicit's own `precision_at_k` divides by min(K, relevant) and is NOT precision
(benfred/implicit#412, #713).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import scipy.sparse as sp
from implicit.cpu.als import AlternatingLeastSquares

from recsys.errors import ModelError
from recsys.progress import ProgressCallback
from training.data import LAST_TS_COLUMN, InteractionMatrix, check_csr, to_csr
from training.model import (
    PAD_ITEM,
    AlsParams,
    fit_als,
    item_popularity,
    popularity_order,
    recommend_top_n,
    resolve_als_device,
)

log = logging.getLogger(__name__)

HOLDOUT_SPLITS = ("random", "time")
#: default sweeps of the warm-started fit on all data (`evaluate_and_refit`)
REFIT_ITERATIONS = 3


def _first_per_user_mask(matrix: sp.csr_matrix, rows: np.ndarray, holdout_fraction: float,
                         within_user_keys: tuple[np.ndarray, ...]) -> np.ndarray:
    """True for the non-zeros that stay in train: each user's first round((1 - holdout_fraction)
    * n_u) items (at least one) when sorted by `within_user_keys` (np.lexsort keys, the last
    one primary).

    The count is Python/NumPy round-half-to-even, as Recommenders does.
    """
    if not 0.0 <= holdout_fraction < 1.0:
        raise ModelError(f"holdout_fraction must be in [0, 1), got {holdout_fraction}")
    per_user = np.diff(matrix.indptr).astype(np.int64)
    n_train = np.rint((1.0 - holdout_fraction) * per_user).astype(np.int64)
    n_train = np.where(per_user > 0, np.clip(n_train, 1, per_user), 0)
    order = _grouped_order(rows, within_user_keys)
    rank = np.empty(matrix.nnz, dtype=np.int64)
    rank[order] = np.arange(matrix.nnz) - matrix.indptr[rows[order]]
    return rank < n_train[rows]


def _grouped_order(rows: np.ndarray, keys: tuple[np.ndarray, ...]) -> np.ndarray:
    """``np.lexsort((*keys, rows))``: grouped by row (ascending), then by the keys.

    One key in [0, 1) (the random split's) takes a faster path, ~7x: one sort of
    ``row + key``. It is used only when it provably gives lexsort's order: the sorted sums
    strictly increase (no two keys of a row collapsed to one float) and their rows never
    decrease (no key rounded up into the next row); otherwise, lexsort.
    """
    if len(keys) == 1 and len(rows) and 0.0 <= keys[0].min() and keys[0].max() < 1.0:
        combined = rows + keys[0]
        order = np.argsort(combined)
        ordered = combined[order]
        if (ordered[1:] > ordered[:-1]).all() and (np.diff(rows[order]) >= 0).all():
            return order
    return np.lexsort((*keys, rows))


def _nonzero_rows(matrix: sp.csr_matrix) -> np.ndarray:
    """(nnz,) int64 row of each non-zero, in CSR order."""
    return np.repeat(np.arange(matrix.shape[0], dtype=np.int64), np.diff(matrix.indptr))


def _subset(matrix: sp.csr_matrix, rows: np.ndarray, mask: np.ndarray) -> sp.csr_matrix:
    """The non-zeros of `matrix` where `mask`; they keep their CSR order."""
    coo = sp.coo_matrix((matrix.data[mask], (rows[mask], matrix.indices[mask])),
                        shape=matrix.shape)
    return to_csr(coo)


def split_per_user(matrix: sp.csr_matrix, holdout_fraction: float,
                   seed: int) -> tuple[sp.csr_matrix, sp.csr_matrix]:
    """Random holdout per user, like Recommenders' `python_stratified_split(filter_by="user")`.

    Each user keeps round((1 - holdout_fraction) * n_u) of their n_u items in train (Python/NumPy
    round-half-to-even, as Recommenders does), and never fewer than one; the rest go to test. A user
    with a single item keeps it in train.

    Returns:
        (train, test): same shape as `matrix`, disjoint non-zeros whose union is `matrix`.
    """
    check_csr(matrix, name="split_per_user matrix")
    rows = _nonzero_rows(matrix)
    shuffle_keys = np.random.default_rng(seed).random(matrix.nnz)
    in_train = _first_per_user_mask(matrix, rows, holdout_fraction, (shuffle_keys,))
    return _subset(matrix, rows, in_train), _subset(matrix, rows, ~in_train)


def split_per_user_by_time(matrix: sp.csr_matrix, last_ts: np.ndarray | None,
                           holdout_fraction: float,
                           seed: int) -> tuple[sp.csr_matrix, sp.csr_matrix, np.ndarray]:
    """Chronological holdout per user, like Recommenders' `python_chrono_split(filter_by="user")`:
    each user's latest items (by the pair's last event) go to test, the earlier ones to train.

    The per-user counts are those of `split_per_user` (round((1 - holdout_fraction) * n_u) in
    train, at least one), so the two splits differ only in which items are held out. Pairs with
    the same time are ordered by a key seeded with `seed`: deterministic, and not biased towards
    any item order.

    Args:
        matrix: the interactions.
        last_ts: (nnz,) seconds since the epoch of each non-zero's last event, in the order of
            `matrix.data` (`InteractionMatrix.last_ts`).
        holdout_fraction: per-user test share.
        seed: seeds the tie-break.

    Returns:
        (train, test, train_last_ts): train and test as for `split_per_user`; `train_last_ts`
        the times of train's non-zeros in the order of `train.data`, so train can be split again.

    Raises:
        ModelError: `last_ts` is None (the interactions have no `last_ts` column, e.g. an older
            snapshot), misshapen, or unknown (NaN) for some pair.
    """
    check_csr(matrix, name="split_per_user_by_time matrix")
    if last_ts is None:
        raise ModelError(f"a time holdout split needs the interactions' '{LAST_TS_COLUMN}' column "
                         "(last event of each user-item pair), and this data has none: rebuild "
                         "the feature snapshot or use the random split "
                         "(RECSYS_HOLDOUT_SPLIT=random)")
    if last_ts.shape != (matrix.nnz,):
        raise ModelError(f"{LAST_TS_COLUMN} has shape {last_ts.shape}, the matrix "
                         f"{matrix.nnz} non-zeros")
    unknown = int(np.isnan(last_ts).sum())
    if unknown:
        raise ModelError(f"{unknown} user-item pair(s) have a null '{LAST_TS_COLUMN}': "
                         "cannot split by time")
    rows = _nonzero_rows(matrix)
    tie_break = np.random.default_rng(seed).random(matrix.nnz)
    in_train = _first_per_user_mask(matrix, rows, holdout_fraction, (tie_break, last_ts))
    return (_subset(matrix, rows, in_train), _subset(matrix, rows, ~in_train),
            last_ts[in_train])


def holdout_split(matrix: sp.csr_matrix, holdout_fraction: float, seed: int, *, split: str,
                  last_ts: np.ndarray | None = None
                  ) -> tuple[sp.csr_matrix, sp.csr_matrix, np.ndarray | None]:
    """The per-user holdout `split` names: "random" (`split_per_user`) or "time"
    (`split_per_user_by_time`, which needs `last_ts`).

    Returns:
        (train, test, train_last_ts): `train_last_ts` as from `split_per_user_by_time` for "time",
        None for "random".
    """
    if split == "random":
        train, test = split_per_user(matrix, holdout_fraction, seed)
        return train, test, None
    if split == "time":
        return split_per_user_by_time(matrix, last_ts, holdout_fraction, seed)
    raise ModelError(f"unknown holdout split {split!r}; expected one of {HOLDOUT_SPLITS}")


def evaluation_users(n_users: int, max_users: int | None, seed: int) -> np.ndarray | None:
    """The users an evaluation scores: None (all) when there are at most `max_users`, else a
    seeded uniform sample of `max_users` row indices, sorted.

    Scoring every user of a large catalogue costs as much as the nightly top-N itself; a
    100,000-user sample puts the metrics' standard error well below any margin worth gating on.
    The sample depends only on (n_users, max_users, seed), so the gate draws the same users.
    """
    if max_users is None or n_users <= max_users:
        return None
    rng = np.random.default_rng([seed, n_users, max_users])
    return np.sort(rng.choice(n_users, size=max_users, replace=False)).astype(np.int32)


def _hits(recommended: np.ndarray, test: sp.csr_matrix) -> np.ndarray:
    """Boolean (n_users, k): is recommended[u, j] among user u's test items."""
    n_items = test.shape[1]
    test_keys = (np.repeat(np.arange(test.shape[0], dtype=np.int64), np.diff(test.indptr))
                 * n_items + test.indices)  # sorted: CSR with sorted indices
    rec = recommended.astype(np.int64)
    rec_keys = np.arange(rec.shape[0], dtype=np.int64)[:, None] * n_items + rec
    pos = np.searchsorted(test_keys, rec_keys)
    pos = np.minimum(pos, max(len(test_keys) - 1, 0))
    found = test_keys[pos] == rec_keys if len(test_keys) else np.zeros(rec.shape, dtype=bool)
    return found & (rec >= 0) & (rec < n_items)


def ranking_metrics(recommended: np.ndarray, test: sp.csr_matrix, k: int, *,
                    n_items: int) -> dict[str, float]:
    """Top-k ranking metrics of `recommended` against the non-zeros of `test`.

    Args:
        recommended: (n_users, >= k) item indices best first, row u for user u; -1 pads.
        test: (n_users, n_items) csr_matrix of held-out interactions (relevance is binary).
        k: cut-off.
        n_items: catalogue size for coverage.

    Returns:
        {"precision@k", "recall@k", "ndcg@k", "map", "coverage", "users"} where the first four are
        means over users with >= 1 test item, "coverage" is the share of the catalogue appearing
        in the top k of any row of `recommended`, and "users" is the number of users evaluated.
    """
    check_csr(test, name="ranking_metrics test")
    if recommended.ndim != 2 or recommended.shape[0] != test.shape[0]:
        raise ModelError(f"recommended has shape {recommended.shape}, test has "
                         f"{test.shape[0]} users")
    if k < 1 or recommended.shape[1] < k:
        raise ModelError(f"need 1 <= k <= {recommended.shape[1]} recommendations, got k={k}")
    test = to_csr(test)  # canonical: sorted indices, no duplicates
    top = recommended[:, :k]
    n_rel = np.diff(test.indptr)
    users = n_rel > 0

    recommended_items = np.unique(top[top >= 0])
    result = {f"precision@{k}": 0.0, f"recall@{k}": 0.0, f"ndcg@{k}": 0.0, "map": 0.0,
              "coverage": float(len(recommended_items) / n_items) if n_items else 0.0,
              "users": int(users.sum())}
    if not users.any():
        return result

    hits = _hits(top, test)[users].astype(np.float64)
    rel = n_rel[users].astype(np.float64)
    ranks = np.arange(1, k + 1, dtype=np.float64)
    discounts = 1.0 / np.log2(ranks + 1.0)
    n_hits = hits.sum(axis=1)

    dcg = hits @ discounts
    ideal = np.concatenate([[0.0], np.cumsum(discounts)])[np.minimum(rel, k).astype(np.int64)]
    precision_at_rank = np.cumsum(hits, axis=1) / ranks
    ap = (precision_at_rank * hits).sum(axis=1) / rel

    result[f"precision@{k}"] = float(np.mean(n_hits / k))
    result[f"recall@{k}"] = float(np.mean(n_hits / rel))
    result[f"ndcg@{k}"] = float(np.mean(dcg / ideal))
    result["map"] = float(np.mean(ap))
    return result


def popularity_recommendations(train: sp.csr_matrix, k: int) -> np.ndarray:
    """Most-popular baseline: the k most popular items (by distinct users, ties by weight) that
    each user has not interacted with in `train`.

    Without a per-user pass: with a user's seen items' positions in the ranking sorted,
    r_0 < r_1 < ..., there are g_i = r_i - i unseen items ahead of r_i, so the user's j-th
    unseen item (from 0) sits at position j + #{i: g_i <= j}; one sort and one binary search
    for all users.

    Returns:
        (n_users, k) int32 item indices, -1 padded when a user has seen nearly every item.
    """
    check_csr(train, name="popularity_recommendations train")
    if k < 1:
        raise ModelError(f"k must be >= 1, got {k}")
    n_users, n_items = train.shape
    counts, weights = item_popularity(train)
    ranking = popularity_order(counts, weights)
    rank_of = np.empty(n_items, dtype=np.int64)
    rank_of[ranking] = np.arange(n_items)
    rows = _nonzero_rows(train)
    span = n_items + 1  # > any rank or g: (row, value) pairs as one sortable integer
    seen = np.sort(rows * span + rank_of[train.indices])  # each row's ranks, ascending
    starts = train.indptr[:-1].astype(np.int64)
    within = np.arange(train.nnz, dtype=np.int64) - np.repeat(starts, np.diff(train.indptr))
    unseen_ahead = seen - within  # row * span + g_i, still ascending
    wanted = np.arange(k, dtype=np.int64)
    queries = np.arange(n_users, dtype=np.int64)[:, None] * span + wanted[None, :]
    ahead = np.searchsorted(unseen_ahead, queries, side="right") - starts[:, None]
    position = wanted[None, :] + ahead
    out = np.full((n_users, k), PAD_ITEM, dtype=np.int32)
    found = position < n_items
    out[found] = ranking[position[found]]
    return out


@dataclass
class TrainResult:
    """What training hands to the registry and the publisher.

    Attributes:
        model: ALS fitted on ALL interactions (for publishing): warm-started from the holdout
            model's factors (see `evaluate_and_refit`).
        params: the hyper-parameters used.
        metrics: {"als": {...}, "popular": {...}, "k", "holdout_fraction", "holdout_split",
            "split_seed", "max_eval_users", "n_users", "n_items", "n_interactions",
            "als_device" ("cpu" or "gpu", where both fits ran), "refit_iterations" (sweeps of the
            warm-started fit on all data),
            "timings": {"fit_train_s", "recommend_s", "fit_all_s"}}.
    """

    model: AlternatingLeastSquares
    params: AlsParams
    metrics: dict[str, Any] = field(default_factory=dict)


def train_and_evaluate(data: InteractionMatrix, params: AlsParams, *, k: int = 10,
                       holdout_fraction: float = 0.25, split: str = "random",
                       num_threads: int = 0, max_eval_users: int | None = None,
                       als_device: str = "cpu", refit_iterations: int = REFIT_ITERATIONS,
                       progress: ProgressCallback | None = None) -> TrainResult:
    """Split -> fit on train -> recommend excluding train items -> metrics for ALS and the
    popularity baseline -> warm-started fit on all interactions for publishing.

    The split (`holdout_split`: "random", or "time" from `data.last_ts`) is seeded with
    `params.seed`; see `evaluate_and_refit` for `max_eval_users`, `als_device`,
    `refit_iterations` and `progress`.
    """
    train, test, _ = holdout_split(data.matrix, holdout_fraction, params.seed, split=split,
                                   last_ts=data.last_ts)
    return evaluate_and_refit(data, train, test, params, k=k, holdout_fraction=holdout_fraction,
                              split=split, num_threads=num_threads,
                              max_eval_users=max_eval_users, als_device=als_device,
                              refit_iterations=refit_iterations, progress=progress)


def evaluate_and_refit(data: InteractionMatrix, train: sp.csr_matrix, test: sp.csr_matrix,
                       params: AlsParams, *, k: int, holdout_fraction: float, split: str,
                       num_threads: int = 0, max_eval_users: int | None = None,
                       als_device: str = "cpu", refit_iterations: int = REFIT_ITERATIONS,
                       progress: ProgressCallback | None = None) -> TrainResult:
    """Fit `params` on `train`, score ALS and the popularity baseline on `test`, then fit on all
    data warm-started from the holdout model.

    One full fit, not two: the published model starts from the holdout model's factors (`train`
    has the shape of `data.matrix`) and runs `refit_iterations` more sweeps on every interaction.
    On MovieLens 100K (an outer 80/20 split; the warm-started and a cold 15-sweep fit on the 80 %
    scored on the 20 %, 3 seeds x 2 sizes), 3 sweeps came within 0.0033 nDCG@10 of the cold fit
    (mean -0.0008) and 5 matched it (docs/benchmarks.md, Training; tests/training/
    test_warm_start.py keeps the check).

    Args:
        data: all interactions (the published model is refitted on `data.matrix`).
        train, test: the holdout split of `data.matrix` (seeded with `params.seed`).
        params: hyper-parameters (chosen without looking at `test`).
        k: cut-off.
        holdout_fraction, split: how `train` and `test` were split (`holdout_split`), recorded
            in the metrics with the split seed so the gate can re-make the split.
        num_threads: implicit's threads.
        max_eval_users: score a seeded sample of this many users (`evaluation_users`) instead
            of all; None scores everyone. Recorded in the metrics, so the gate draws the same.
        als_device: where both fits run: "cpu", "gpu" or "auto" (`training.model.fit_als`); the
            device it resolves to is recorded in the metrics.
        refit_iterations: sweeps of the warm-started fit on all data (at most
            `params.iterations`).
        progress: told the ALS iterations of both fits (steps ``ALS fit (holdout)`` and
            ``ALS fit (all data)``) and the users scored for evaluation (``evaluate``).

    Returns:
        TrainResult with the refitted model and the holdout metrics.
    """
    matrix = data.matrix
    log.info("split %d interactions into %d train / %d test", matrix.nnz, train.nnz, test.nnz)
    sample = evaluation_users(data.n_users, max_eval_users, params.seed)
    eval_test = test if sample is None else test[sample]
    device = resolve_als_device(als_device)

    t0 = time.perf_counter()
    model = fit_als(train, params, num_threads=num_threads, device=device, progress=progress,
                    step="ALS fit (holdout)")
    t1 = time.perf_counter()
    als_recs, _ = recommend_top_n(model, train, k, users=sample, progress=progress,
                                  step="evaluate")
    t2 = time.perf_counter()
    pop_recs = popularity_recommendations(train, k)
    if sample is not None:
        pop_recs = pop_recs[sample]

    metrics: dict[str, Any] = {
        "als": ranking_metrics(als_recs, eval_test, k, n_items=data.n_items),
        "popular": ranking_metrics(pop_recs, eval_test, k, n_items=data.n_items),
        "k": k,
        "holdout_fraction": holdout_fraction,
        "holdout_split": split,
        "split_seed": params.seed,
        "max_eval_users": max_eval_users,
        "n_users": data.n_users,
        "n_items": data.n_items,
        "n_interactions": data.n_interactions,
        "als_device": device,
        "refit_iterations": min(refit_iterations, params.iterations),
    }
    t3 = time.perf_counter()
    final = fit_als(matrix, params, num_threads=num_threads, device=device, progress=progress,
                    step="ALS fit (all data)", init=model,
                    iterations=metrics["refit_iterations"])
    t4 = time.perf_counter()
    metrics["timings"] = {"fit_train_s": round(t1 - t0, 4), "recommend_s": round(t2 - t1, 4),
                          "fit_all_s": round(t4 - t3, 4)}
    log.info("ALS %s vs popular %s", metrics["als"], metrics["popular"])
    return TrainResult(model=final, params=params, metrics=metrics)
