"""ALS fitting (implicit's CPU model, or its CUDA model on request) and batch top-N scoring with
implicit (CPU).

All calls into implicit go through this module, which checks shapes and dtypes where the modules
meet (implicit >= 0.5 wants users x items, one `user_items` row per requested user,
float32/int32, BLAS limited to one thread, `filter_already_liked_items` set on purpose). A model
fitted on the GPU is converted to implicit's CPU model before it leaves `fit_als`, so scoring,
saving and explanations only ever see CPU models.

Padding convention for every top-N array built here: item index -1 and score 0.0 (not -inf, so that
the arrays stay JSON-safe downstream). Consumers must drop entries whose item index is -1.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from types import SimpleNamespace
from typing import Any

import implicit.gpu.als
import numpy as np
import scipy.sparse as sp
from implicit.cpu.als import AlternatingLeastSquares
from implicit.cpu.topk import topk
from threadpoolctl import threadpool_limits

from recsys.errors import ModelError
from recsys.progress import ProgressCallback, report_progress
from training.data import check_csr, to_csr

log = logging.getLogger(__name__)

PAD_ITEM = -1
PAD_SCORE = 0.0
# implicit's topk marks filtered-out candidates with -FLT_MAX (their ids are arbitrary).
_FILTERED_SCORE = float(np.finfo(np.float32).min)
# `recommend_top_n` asks implicit for this many more candidates than it keeps (see `_rescored`)
_EXTRA_CANDIDATES = 8

WEIGHTINGS = ("raw", "log1p", "bm25", "binary")
BM25_FLOOR = 1e-3
ALS_DEVICES = ("cpu", "gpu", "auto")


@dataclass(frozen=True)
class AlsParams:
    """Hyper-parameters of implicit's ALS.

    The defaults were picked on MovieLens 100K (weight = rating 1-5) with a validation split carved
    out of the training part of a per-user 75/25 split (never the test part): small alpha and strong
    regularization win there (training/search.py). They depend on the scale of the weights; re-check them when the
    feature store's confidence definition changes.

    Attributes:
        factors: latent dimensions.
        regularization: L2 penalty.
        alpha: confidence scaling of the weights (C = 1 + alpha * weight in the paper's terms).
        iterations: ALS sweeps.
        seed: random_state for the factor initialisation.
        weighting: how the stored weights become confidences before `alpha` scales them: "raw"
            (as stored), "log1p" (log(1 + w), damps heavy users/items), "bm25" (implicit's BM25
            weighting of the items x users matrix, K1=100, B=0.8) or "binary" (1 per pair).
    """

    factors: int = 32
    regularization: float = 50.0
    alpha: float = 2.0
    iterations: int = 15
    seed: int = 42
    weighting: str = "raw"

    def __post_init__(self) -> None:
        if self.factors < 1 or self.iterations < 1:
            raise ModelError(f"factors and iterations must be >= 1: {self}")
        if self.regularization < 0 or self.alpha <= 0:
            raise ModelError(f"regularization must be >= 0 and alpha > 0: {self}")
        if self.weighting not in WEIGHTINGS:
            raise ModelError(f"unknown confidence weighting {self.weighting!r}; "
                             f"expected one of {WEIGHTINGS}")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def apply_weighting(matrix: sp.csr_matrix, weighting: str) -> sp.csr_matrix:
    """The confidence matrix ALS trains on: `matrix` with its non-zeros re-weighted.

    The sparsity pattern is unchanged, so filtering seen items works on either matrix.

    Args:
        matrix: (n_users, n_items) float32/int32 csr_matrix of positive weights.
        weighting: one of `WEIGHTINGS` (see `AlsParams`).

    Returns:
        A new float32/int32 csr_matrix (or `matrix` itself for "raw").
    """
    check_csr(matrix, name="apply_weighting matrix")
    if weighting == "raw":
        return matrix
    out = matrix.copy()
    if weighting == "log1p":
        out.data = np.log1p(matrix.data, dtype=np.float32)
    elif weighting == "binary":
        out.data = np.ones_like(matrix.data)
    elif weighting == "bm25":
        from implicit.nearest_neighbours import bm25_weight

        weighted = to_csr(bm25_weight(matrix.T.tocsr(), K1=100, B=0.8).T.tocsr())
        # implicit >= 0.7.3's idf, log(N) - log1p(df), is 0 or below for items (nearly) every
        # user has: keep them a weak positive rather than a zero or negative confidence.
        weighted.data = np.maximum(weighted.data, BM25_FLOOR).astype(np.float32)
        out = weighted
    else:
        raise ModelError(f"unknown confidence weighting {weighting!r}; expected one of "
                         f"{WEIGHTINGS}")
    return out


def resolve_als_device(device: str) -> str:
    """The device ALS fits on for the `als_device` setting: "cpu" and "gpu" as given, "auto" the
    GPU when implicit has a working CUDA extension (`implicit.gpu.HAS_CUDA`), else the CPU.

    Raises:
        ModelError: `device` is not one of `ALS_DEVICES`.
    """
    if device not in ALS_DEVICES:
        raise ModelError(f"unknown ALS device {device!r}; expected one of {ALS_DEVICES}")
    if device == "auto":
        return "gpu" if implicit.gpu.HAS_CUDA else "cpu"
    return device


def fit_als(matrix: sp.csr_matrix, params: AlsParams, *, num_threads: int = 0,
            device: str = "cpu", progress: ProgressCallback | None = None,
            step: str = "ALS fit", init: AlternatingLeastSquares | None = None,
            iterations: int | None = None) -> AlternatingLeastSquares:
    """Fit ALS on a users x items confidence matrix.

    Args:
        matrix: (n_users, n_items) float32/int32 csr_matrix of weights; `params.weighting`
            turns them into confidences.
        params: hyper-parameters; `params.seed` seeds the factor initialisation.
        num_threads: implicit's worker threads on the CPU (0 = all cores). BLAS is always limited
            to one thread. CPU results are deterministic for a seed on the same machine.
        device: "cpu", "gpu" or "auto" (`resolve_als_device`). The GPU fit uses implicit's own
            random initialisation and CUDA solver, so its factors differ from the CPU's.
        progress: told after each ALS iteration (`step`, iterations done, iterations).
        step: the name `progress` is given.
        init: warm start: a fitted model of the same shape whose factors (copied, never changed)
            are the starting point instead of a random initialisation. implicit's `fit` keeps
            factors that are already set, and its conjugate-gradient solver starts from them.
        iterations: ALS sweeps of this fit; None runs `params.iterations`.

    Returns:
        The fitted CPU model (user_factors n_users x f, item_factors n_items x f, float32), also
        when it was fitted on the GPU.

    Raises:
        ModelError: an empty matrix, an unknown device, or "gpu" without a working CUDA implicit.
    """
    check_csr(matrix, name="fit_als matrix")
    if matrix.nnz == 0 or 0 in matrix.shape:
        raise ModelError(f"cannot fit ALS on an empty matrix of shape {matrix.shape}")
    resolved = resolve_als_device(device)
    sweeps = params.iterations if iterations is None else iterations
    if sweeps < 1:
        raise ModelError(f"iterations must be >= 1, got {sweeps}")
    if init is not None:
        _check_model(init, n_users=matrix.shape[0], n_items=matrix.shape[1])
    callback = None if progress is None else _fit_callback(progress, step, sweeps)
    start = time.perf_counter()
    with threadpool_limits(1, "blas"):  # inside: implicit's constructor checks the BLAS config
        weighted = apply_weighting(matrix, params.weighting)
        if resolved == "gpu":
            model = _fit_gpu(weighted, params, sweeps, callback, init)
        else:
            model = AlternatingLeastSquares(
                factors=params.factors,
                regularization=params.regularization,
                alpha=params.alpha,
                iterations=sweeps,
                dtype=np.float32,
                random_state=params.seed,
                num_threads=num_threads,
            )
            if init is not None:
                model.user_factors = np.array(init.user_factors, dtype=np.float32)
                model.item_factors = np.array(init.item_factors, dtype=np.float32)
            model.fit(weighted, show_progress=False, callback=callback)
    log.info("fitted ALS %s (%d iterations%s) on %d x %d (%d nnz) on the %s in %.2fs",
             params.to_dict(), sweeps, ", warm start" if init is not None else "",
             *matrix.shape, matrix.nnz, resolved.upper(), time.perf_counter() - start)
    _check_model(model, n_users=matrix.shape[0], n_items=matrix.shape[1])
    return model


def _fit_callback(progress: ProgressCallback, step: str, iterations: int
                  ) -> Callable[[int, float, float | None], None]:
    """implicit's fit callback, called with (iteration, seconds, loss), as a progress report."""
    def callback(iteration: int, _seconds: float, _loss: float | None) -> None:
        report_progress(progress, step, iteration + 1, iterations)
    return callback


def _fit_gpu(weighted: sp.csr_matrix, params: AlsParams, iterations: int,
             callback: Callable[[int, float, float | None], None] | None = None,
             init: AlternatingLeastSquares | None = None) -> AlternatingLeastSquares:
    """Fit implicit's CUDA ALS on the re-weighted matrix and return it as a CPU model.

    implicit's GPU `fit` (0.7.x) does not multiply the matrix by `alpha` as the CPU `fit` does, so
    the GPU model is built with alpha=1 and fitted on alpha * weights: both devices fit the same
    confidences whether or not a later implicit scales inside `fit`. The CPU copy gets
    `params.alpha` back, since implicit's `explain` and `recalculate_user` scale by it.

    Raises:
        ModelError: implicit has no working CUDA extension (never a silent fall-back to the CPU).
    """
    if not implicit.gpu.HAS_CUDA:
        raise ModelError(
            "ALS on the GPU was asked for (RECSYS_ALS_DEVICE=gpu), but the installed implicit has "
            "no working CUDA extension (implicit.gpu.HAS_CUDA is False): it was built without "
            "CUDA, or no GPU is visible. implicit's source build needs CUDA and RAPIDS at build "
            "time (see docs/scaling.md, section 5). Set RECSYS_ALS_DEVICE=cpu to fit on the CPU.")
    gpu_model = implicit.gpu.als.AlternatingLeastSquares(
        factors=params.factors,
        regularization=params.regularization,
        alpha=1.0,
        iterations=iterations,
        dtype=np.float32,
        random_state=params.seed,
    )
    if init is not None:  # implicit's GPU fit, too, keeps factors that are already set
        gpu_model.user_factors = implicit.gpu.Matrix(np.array(init.user_factors, np.float32))
        gpu_model.item_factors = implicit.gpu.Matrix(np.array(init.item_factors, np.float32))
    gpu_model.fit(to_csr(weighted * np.float32(params.alpha)), show_progress=False,
                  callback=callback)
    model = gpu_model.to_cpu()
    model.alpha = params.alpha
    return model


def _check_model(model: AlternatingLeastSquares, *, n_users: int | None = None,
                 n_items: int | None = None) -> None:
    """The one place that checks that a model and a matrix agree on users and items."""
    if model.user_factors is None or model.item_factors is None:
        raise ModelError("model is not fitted")
    if n_users is not None and model.user_factors.shape[0] != n_users:
        raise ModelError(f"model has {model.user_factors.shape[0]} users, matrix has {n_users} "
                         "rows (implicit >= 0.5 expects a users x items matrix)")
    if n_items is not None and model.item_factors.shape[0] != n_items:
        raise ModelError(f"model has {model.item_factors.shape[0]} items, matrix has {n_items} "
                         "columns (implicit >= 0.5 expects a users x items matrix)")


def _pad(ids: np.ndarray, scores: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Mask invalid entries and right-pad to width n with (-1, PAD_SCORE)."""
    ids = ids.astype(np.int32, copy=False)
    scores = scores.astype(np.float32, copy=False)
    invalid = (ids < 0) | ~np.isfinite(scores) | (scores <= _FILTERED_SCORE)
    ids = np.where(invalid, PAD_ITEM, ids).astype(np.int32)
    scores = np.where(invalid, PAD_SCORE, scores).astype(np.float32)
    if ids.shape[1] < n:
        extra = n - ids.shape[1]
        ids = np.pad(ids, ((0, 0), (0, extra)), constant_values=PAD_ITEM)
        scores = np.pad(scores, ((0, 0), (0, extra)), constant_values=PAD_SCORE)
    return ids, scores


class _SeenRows:
    """A CSR matrix's rows as implicit's `topk` reads its `filter_query_items`: `rows[i].indices`
    (a view of the row's column indices, no scipy object per row)."""

    __slots__ = ("_indices", "_indptr")

    def __init__(self, rows: sp.csr_matrix) -> None:
        self._indptr, self._indices = rows.indptr, rows.indices

    def __getitem__(self, row: int) -> SimpleNamespace:
        return SimpleNamespace(indices=self._indices[self._indptr[row]:self._indptr[row + 1]])


def _rescored(query: np.ndarray, item_factors64: np.ndarray, ids: np.ndarray,
              scores: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
    """The best n of each row's candidates by scores recomputed in float64, padded as `_pad`.

    BLAS's float32 products of a user depend in their last bit on the batch the user was scored
    in, so the same user could get different scores (and, at near-ties, another order) when the
    users are split into other partitions. Recomputing the candidates' scores from the float32
    factors in float64 (each product exact, only the 64-bit sum rounds) and ranking by them,
    ties by item index, makes every user's list a function of that user alone; the candidates
    include `_EXTRA_CANDIDATES` more than n so that a near-tie at the cut-off cannot change which
    items make the list.
    """
    valid = (ids >= 0) & np.isfinite(scores) & (scores > _FILTERED_SCORE)
    safe = np.where(valid, ids, 0)
    query64 = query.astype(np.float64)[:, :, None]
    exact = np.empty(ids.shape, dtype=np.float64)
    for start in range(0, len(ids), 256):  # (256, n + extra, f) gathers stay in the cache
        rows = slice(start, start + 256)
        # one (candidates x f) @ (f x 1) product per user: the same computation in any batch
        exact[rows] = np.matmul(item_factors64[safe[rows]], query64[rows])[..., 0]
    exact[~valid] = -np.inf
    order = np.lexsort((safe, -exact), axis=-1)[:, :n]
    best = np.take_along_axis(exact, order, axis=1)
    return _pad(np.take_along_axis(ids, order, axis=1),
                np.where(np.isfinite(best), best, -np.inf).astype(np.float32), n)


def recommend_top_n(model: AlternatingLeastSquares, user_items: sp.csr_matrix, n: int, *,
                    batch_size: int = 10_000, users: np.ndarray | None = None,
                    progress: ProgressCallback | None = None,
                    step: str = "recommend") -> tuple[np.ndarray, np.ndarray]:
    """Top-n items for every user (or for `users`), excluding the items in the user's row of
    `user_items`.

    Args:
        model: a fitted model whose users/items are the rows/columns of `user_items`.
        user_items: (n_users, n_items) csr_matrix; its non-zeros are filtered out on purpose.
        n: list length.
        batch_size: users per `model.recommend` call.
        users: row indices to recommend for (e.g. an evaluation sample); None means all rows.
        progress: told after each batch (`step`, users done, users asked for).
        step: the name `progress` is given.

    Returns:
        (items, scores): (len(users) or n_users, n) int32 item indices best first and float32
        scores, row r for user `users[r]`; users with fewer than n candidate items are padded
        with -1 / 0.0.
    """
    check_csr(user_items, name="recommend_top_n user_items")
    if n < 1 or batch_size < 1:
        raise ModelError(f"n and batch_size must be >= 1 (got n={n}, batch_size={batch_size})")
    n_users, n_items = user_items.shape
    _check_model(model, n_users=n_users, n_items=n_items)
    wanted = (np.arange(n_users, dtype=np.int32) if users is None
              else np.asarray(users, dtype=np.int32))
    if wanted.size and (wanted.min() < 0 or wanted.max() >= n_users):
        raise ModelError(f"users must be row indices in [0, {n_users})")
    # implicit's topk returns garbage columns beyond n_items
    n_ask = min(n + _EXTRA_CANDIDATES, n_items)
    out_items = np.full((len(wanted), n), PAD_ITEM, dtype=np.int32)
    out_scores = np.full((len(wanted), n), PAD_SCORE, dtype=np.float32)
    item_factors = np.asarray(model.item_factors)
    item_factors64 = item_factors.astype(np.float64)
    with threadpool_limits(1, "blas"):
        for start in range(0, len(wanted), batch_size):
            stop = min(start + batch_size, len(wanted))
            userids = wanted[start:stop]
            rows = user_items[userids]
            if rows.shape[0] != len(userids):
                raise ModelError("user_items batch does not have one row per requested user")
            # What model.recommend(userids, rows, N, filter_already_liked_items=True) does, minus
            # its cost: implicit's topk reads each user's seen items as `rows[i].indices`, which
            # on a scipy matrix is a ~0.5 ms slice per user (more than the scoring itself).
            query = np.asarray(model.user_factors)[userids]
            ids, scores = topk(item_factors, query, n_ask, filter_query_items=_SeenRows(rows),
                               num_threads=model.num_threads)
            ids, scores = _rescored(query, item_factors64, np.atleast_2d(ids),
                                    np.atleast_2d(scores), n)
            out_items[start:stop], out_scores[start:stop] = ids, scores
            report_progress(progress, step, stop, len(wanted))
    return out_items, out_scores


def similar_items_top_n(model: AlternatingLeastSquares, n: int, *, batch_size: int = 10_000,
                        progress: ProgressCallback | None = None
                        ) -> tuple[np.ndarray, np.ndarray]:
    """The n most similar items (cosine of item factors) of every item, the item itself excluded.
    `progress` is told the items done after each batch (step ``similar items``).

    Returns:
        (items, scores): (n_items, n) int32 item indices most similar first and float32 cosine
        similarities, padded with -1 / 0.0 when the catalogue has fewer than n + 1 items.
    """
    if n < 1 or batch_size < 1:
        raise ModelError(f"n and batch_size must be >= 1 (got n={n}, batch_size={batch_size})")
    _check_model(model)
    n_items = model.item_factors.shape[0]
    n_ask = min(n + 1, n_items)
    out_items = np.full((n_items, n), PAD_ITEM, dtype=np.int32)
    out_scores = np.full((n_items, n), PAD_SCORE, dtype=np.float32)
    with threadpool_limits(1, "blas"):
        for start in range(0, n_items, batch_size):
            itemids = np.arange(start, min(start + batch_size, n_items), dtype=np.int32)
            ids, scores = model.similar_items(itemids, N=n_ask)
            ids, scores = np.atleast_2d(ids), np.atleast_2d(scores)
            # Drop the item itself wherever it appears (ties may put it after position 0); when it
            # is absent, drop the last column instead. A stable sort keeps the ranking order.
            is_self = ids == itemids[:, None]
            order = np.argsort(is_self, axis=1, kind="stable")[:, : n_ask - 1]
            ids = np.take_along_axis(ids, order, axis=1)
            scores = np.take_along_axis(scores, order, axis=1)
            ids, scores = _pad(ids, scores, n)
            out_items[itemids], out_scores[itemids] = ids[:, :n], scores[:, :n]
            report_progress(progress, "similar items", int(itemids[-1]) + 1, n_items)
    return out_items, out_scores


def popular_items(matrix: sp.csr_matrix, n: int) -> tuple[np.ndarray, np.ndarray]:
    """The n most popular items: most distinct users first, ties by summed weight, then index.

    Items nobody interacted with are left out, so the arrays may be shorter than n.

    Returns:
        (items, scores): (P,) int32 item indices and (P,) float32 distinct-user counts, P <= n.
    """
    check_csr(matrix, name="popular_items matrix")
    counts, weights = item_popularity(matrix)
    order = popularity_order(counts, weights)
    order = order[counts[order] > 0][:n]
    return order.astype(np.int32), counts[order].astype(np.float32)


def item_popularity(matrix: sp.csr_matrix) -> tuple[np.ndarray, np.ndarray]:
    positive = matrix.data > 0
    counts = np.bincount(matrix.indices[positive], minlength=matrix.shape[1])
    weights = np.bincount(matrix.indices, weights=matrix.data.astype(np.float64),
                          minlength=matrix.shape[1])
    return counts, weights


def popularity_order(counts: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """Item indices sorted by count desc, then weight desc, then index asc."""
    return np.lexsort((np.arange(len(counts)), -weights, -counts))
