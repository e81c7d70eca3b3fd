"""Per-user linear algebra of implicit ALS, batched with numpy: explanations and fold-in.

For a user u with confidences c_j = alpha * w_uj on their past items j (w after the model's
confidence weighting), implicit's ALS solves

    A_u x_u = b_u,   A_u = Y^T Y + reg * I + sum_j (c_j - 1) y_j y_j^T,   b_u = sum_j c_j y_j.

`AlternatingLeastSquares.explain` (Hu, Koren & Volinsky, section 5) splits the score of item i
into one part per past item: s_ij = (A_u^-1 y_i) . y_j * c_j. It does so with one Python call per
(user, item). Here the same quantities are computed for a whole batch of users at once: their
histories are padded to a (B, L) block, the B systems are built with one `einsum` and solved with
one batched `np.linalg.solve`. Users are batched by history length (longest first) under a cell
budget, so one heavy user does not inflate the padding of everyone else.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import scipy.sparse as sp
from threadpoolctl import threadpool_info, threadpool_limits

from recsys.errors import ModelError
from training.data import check_csr
from training.model import PAD_ITEM, PAD_SCORE

log = logging.getLogger(__name__)

DEFAULT_MAX_CELLS = 8_000_000


def _batches(lengths: np.ndarray, per_slot: int, per_user: int,
             max_cells: int) -> Iterator[np.ndarray]:
    """User indices grouped by history length (longest first), each group within `max_cells`.

    A user costs `width * per_slot + per_user` cells, width being the longest history of the batch.
    """
    order = np.argsort(-lengths, kind="stable")
    start = 0
    while start < len(order):
        width = max(int(lengths[order[start]]), 1)
        size = max(1, max_cells // (width * per_slot + per_user))
        yield order[start:start + size]
        start += size


def _histories(confidence: sp.csr_matrix, users: np.ndarray
               ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Padded (B, L) item indices, confidences and a validity mask of `users`' rows."""
    rows = confidence[users]
    lengths = np.diff(rows.indptr)
    width = max(int(lengths.max(initial=0)), 1)
    row_of = np.repeat(np.arange(len(users)), lengths)
    col_of = np.arange(rows.nnz) - np.repeat(rows.indptr[:-1], lengths)
    items = np.zeros((len(users), width), dtype=np.int64)
    conf = np.zeros((len(users), width), dtype=np.float64)
    mask = np.zeros((len(users), width), dtype=bool)
    items[row_of, col_of] = rows.indices
    conf[row_of, col_of] = rows.data
    mask[row_of, col_of] = True
    return items, conf, mask


def _systems(item_factors: np.ndarray, gram: np.ndarray, items: np.ndarray, conf: np.ndarray,
             mask: np.ndarray, regularization: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A (B, f, f), b (B, f) and the history factors (B, L, f) of a padded batch (padding
    slots hold item 0's factors: every use weighs them by 0)."""
    hist = item_factors[items]                                         # (B, L, f)
    n_factors = item_factors.shape[1]
    weighted = hist * np.where(mask, conf - 1.0, 0.0)[..., None]
    a = np.matmul(weighted.transpose(0, 2, 1), hist)                   # batched BLAS
    a += (gram + regularization * np.eye(n_factors))[None]
    b = np.matmul(np.where(mask, conf, 0.0)[:, None, :], hist)[:, 0, :]
    return a, b, hist


def parallel_threads() -> int:
    """Threads for numpy work beside implicit's: the size of this process's OpenMP pool (what
    implicit's own parallel loops use; 1 in a worker held to one thread by threadpoolctl), else
    the CPUs this process may run on."""
    pools = [info["num_threads"] for info in threadpool_info() if info["user_api"] == "openmp"]
    if pools:
        return max(1, min(pools))
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def _check(item_factors: np.ndarray, confidence: sp.csr_matrix, regularization: float) -> None:
    check_csr(confidence, name="confidence")
    if item_factors.ndim != 2 or item_factors.shape[0] != confidence.shape[1]:
        raise ModelError(f"item factors {item_factors.shape} do not match a confidence matrix "
                         f"with {confidence.shape[1]} items")
    if regularization < 0:
        raise ModelError(f"regularization must be >= 0, got {regularization}")


def _top_past_items(contrib: np.ndarray, items: np.ndarray, width: int
                    ) -> tuple[np.ndarray, np.ndarray]:
    """The `width` largest contributions along the last axis, largest first (ties: the earlier
    past item), as (B, N, width) item indices and scores. `width` passes of argmax: for the few
    explaining items kept, cheaper than a partition plus a sort."""
    n_users, n_rec, _ = contrib.shape
    top = np.empty((n_users, n_rec, width), dtype=np.int64)
    top_scores = np.empty((n_users, n_rec, width), dtype=contrib.dtype)
    for rank in range(width):
        best = contrib.argmax(axis=2)[..., None]                          # (B, N, 1)
        top[..., rank:rank + 1] = best
        top_scores[..., rank:rank + 1] = np.take_along_axis(contrib, best, axis=2)
        np.put_along_axis(contrib, best, -np.inf, axis=2)
    return np.take_along_axis(items[:, None, :], top, axis=2), top_scores


def explain_recommendations(item_factors: np.ndarray, confidence: sp.csr_matrix,
                            rec_items: np.ndarray, *, regularization: float, n_explain: int,
                            max_cells: int = DEFAULT_MAX_CELLS, num_threads: int = 0
                            ) -> tuple[np.ndarray, np.ndarray]:
    """The past items that contributed most to each recommended item, as implicit's `explain`.

    Args:
        item_factors: (n_items, f) item factors of the model.
        confidence: (n_users, n_items) csr_matrix of confidences alpha * weighting(w), i.e.
            exactly what ALS was fitted on (implicit's `explain` multiplies by alpha itself).
        rec_items: (n_users, N) int item indices, -1 pads.
        regularization: the model's regularization.
        n_explain: E, contributions kept per recommended item.
        max_cells: memory budget of one batch, in array cells (each thread holds one batch).
        num_threads: batches explained at once; 0 = `parallel_threads()`.

    Returns:
        (items, scores): (n_users, N, E) int32 past-item indices, largest contribution first, and
        float32 contributions; -1 / 0.0 pad short histories and padded recommendations.
    """
    _check(item_factors, confidence, regularization)
    if rec_items.ndim != 2 or rec_items.shape[0] != confidence.shape[0]:
        raise ModelError(f"rec_items has shape {rec_items.shape}, confidence has "
                         f"{confidence.shape[0]} users")
    if n_explain < 1:
        raise ModelError(f"n_explain must be >= 1, got {n_explain}")
    n_users, n_rec = rec_items.shape
    y = np.asarray(item_factors, dtype=np.float64)
    gram = y.T @ y
    n_factors = y.shape[1]
    out_items = np.full((n_users, n_rec, n_explain), PAD_ITEM, dtype=np.int32)
    out_scores = np.full((n_users, n_rec, n_explain), PAD_SCORE, dtype=np.float32)
    lengths = np.diff(confidence.indptr)
    batches = list(_batches(lengths, 2 * n_factors + 3 * n_rec,
                            n_factors * n_factors + 2 * n_rec * n_factors, max_cells))

    def explain_batch(users: np.ndarray) -> None:
        items, conf, mask = _histories(confidence, users)
        a, _, hist = _systems(y, gram, items, conf, mask, regularization)
        recs = rec_items[users]
        valid_rec = recs >= 0
        targets = y[np.where(valid_rec, recs, 0)]                        # (B, N, f)
        weighted_hist = hist * conf[..., None]                           # c_j y_j, 0 for pads
        # s_ij = y_i . A^-1 (c_j y_j) for every recommended i and past j: (B, N, L). A is
        # symmetric, so solve for whichever side has fewer right-hand sides.
        if hist.shape[1] <= n_rec:
            contrib = np.matmul(targets, np.linalg.solve(a, weighted_hist.transpose(0, 2, 1)))
        else:
            solved = np.linalg.solve(a, targets.transpose(0, 2, 1))      # (B, f, N)
            contrib = np.matmul(solved.transpose(0, 2, 1), weighted_hist.transpose(0, 2, 1))
        contrib += np.where(mask, 0.0, -np.inf)[:, None, :]              # padding never wins
        top_items, top_scores = _top_past_items(contrib, items,
                                                min(n_explain, contrib.shape[2]))
        keep = np.isfinite(top_scores) & valid_rec[:, :, None]
        width = top_items.shape[2]
        out_items[users, :, :width] = np.where(keep, top_items, PAD_ITEM)   # disjoint rows
        out_scores[users, :, :width] = np.where(keep, top_scores, PAD_SCORE)

    start = time.perf_counter()
    # numpy releases the GIL in every step above: batches run side by side on `threads`
    # threads, each with single-threaded BLAS (results do not depend on the thread count)
    threads = parallel_threads() if num_threads <= 0 else num_threads
    with threadpool_limits(1, "blas"), ThreadPoolExecutor(min(threads, len(batches) or 1)) as pool:
        list(pool.map(explain_batch, batches))
    log.info("explained %d x %d recommendations (top %d past items) in %.2fs", n_users, n_rec,
             n_explain, time.perf_counter() - start)
    return out_items, out_scores


def fold_in_users(item_factors: np.ndarray, confidence: sp.csr_matrix, *,
                  regularization: float, max_cells: int = DEFAULT_MAX_CELLS) -> np.ndarray:
    """User factors solved exactly from fixed item factors and each user's confidences.

    This is what implicit's `recalculate_user=True` does one user at a time; a user with no
    history gets a zero vector.

    Returns:
        (n_users, f) float32 user factors.
    """
    _check(item_factors, confidence, regularization)
    y = np.asarray(item_factors, dtype=np.float64)
    gram = y.T @ y
    n_factors = y.shape[1]
    out = np.zeros((confidence.shape[0], n_factors), dtype=np.float32)
    with threadpool_limits(1, "blas"):
        for users in _batches(np.diff(confidence.indptr), 2 * n_factors + 3,
                              n_factors * n_factors + n_factors, max_cells):
            items, conf, mask = _histories(confidence, users)
            a, b, _ = _systems(y, gram, items, conf, mask, regularization)
            out[users] = np.linalg.solve(a, b[..., None])[..., 0]
    return out
