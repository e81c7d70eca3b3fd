"""All-users top-N scoring with PyTorch: the optional GPU path next to `training.model`'s CPU one.

`recommend_top_n_torch` returns exactly what `training.model.recommend_top_n` returns, for the same
model and matrix: (n_users, n) int32 item indices best first and float32 scores, each user's seen
items (the non-zeros of their row of `user_items`) filtered out, short rows padded with
`PAD_ITEM` / `PAD_SCORE`. Scores agree to float32 rounding; items with equal scores may come in a
different order.

Per batch of users: one (batch x factors) @ (factors x items) matmul on the device, the batch's CSR
rows scattered into it as -inf (one `index_put_`), one `torch.topk`. The item factors are copied
to the device once; each batch moves its user factors and CSR rows in and its top-n out, so the
device holds about `batch_size x n_items x 4` bytes of scores at a time.

torch is an optional dependency (`pip install 'recsys-batch[gpu]'`), imported only when a function
here runs; the pipeline uses this path only with `RECSYS_SCORE_BACKEND=gpu`.
"""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING, Any

import numpy as np
import scipy.sparse as sp

from recsys.errors import ModelError
from training.data import check_csr
from training.model import PAD_ITEM, PAD_SCORE, _check_model, _pad

if TYPE_CHECKING:
    from implicit.cpu.als import AlternatingLeastSquares

log = logging.getLogger(__name__)

GPU_EXTRA = "gpu"
DEFAULT_BATCH_SIZE = 4096


def import_torch() -> Any:
    """`torch`, or a ModelError naming the optional extra that installs it."""
    try:
        import torch
    except ImportError as exc:
        raise ModelError(
            "the torch scoring path needs PyTorch, which is not installed: "
            f"pip install 'recsys-batch[{GPU_EXTRA}]' (or set RECSYS_SCORE_BACKEND=cpu)"
        ) from exc
    return torch


def resolve_device(device: str | None = None) -> Any:
    """The torch device to score on: `device` as given, or "cuda" when available, else "cpu".

    Raises:
        ModelError: torch is missing, or a CUDA device is asked for and CUDA is not available
            (never a silent fall-back to the CPU).
    """
    torch = import_torch()
    if device is None:
        device = "cuda" if torch.cuda.is_available() else "cpu"
    resolved = torch.device(device)
    if resolved.type == "cuda" and not torch.cuda.is_available():
        raise ModelError(
            f"device {device!r} asked for, but CUDA is not available to torch {torch.__version__} "
            f"(built for CUDA {torch.version.cuda}); set RECSYS_SCORE_BACKEND=cpu or run on a "
            "machine with a CUDA GPU")
    return resolved


def recommend_top_n_torch(model: AlternatingLeastSquares, user_items: sp.csr_matrix, n: int, *,
                          device: str | None = None, batch_size: int = DEFAULT_BATCH_SIZE,
                          users: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """`training.model.recommend_top_n` computed with torch on `device`.

    Args:
        model: a fitted model whose users/items are the rows/columns of `user_items`.
        user_items: (n_users, n_items) float32/int32 csr_matrix; its non-zeros are filtered out.
        n: list length.
        device: "cuda", "cuda:1", "cpu", ...; None = "cuda" when available, else "cpu".
        batch_size: users per matmul + topk.
        users: row indices to recommend for; None means all rows.

    Returns:
        (items, scores) as `recommend_top_n`: (len(users) or n_users, n) int32 / float32.
    """
    check_csr(user_items, name="recommend_top_n_torch user_items")
    _check_model(model, n_users=user_items.shape[0], n_items=user_items.shape[1])
    return top_n_from_factors(np.asarray(model.user_factors), np.asarray(model.item_factors),
                              user_items, n, device=device, batch_size=batch_size, users=users)


def top_n_from_factors(user_factors: np.ndarray, item_factors: np.ndarray,
                       user_items: sp.csr_matrix, n: int, *, device: str | None = None,
                       batch_size: int = DEFAULT_BATCH_SIZE,
                       users: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Top-n of `user_factors @ item_factors.T` per user, the items of the user's row of
    `user_items` excluded; see `recommend_top_n_torch` for arguments and the returned arrays.

    `user_factors` is (n_users, f) and `item_factors` (n_items, f), both float32 (or cast to it).
    """
    check_csr(user_items, name="top_n_from_factors user_items")
    if n < 1 or batch_size < 1:
        raise ModelError(f"n and batch_size must be >= 1 (got n={n}, batch_size={batch_size})")
    n_users, n_items = user_items.shape
    if user_factors.ndim != 2 or item_factors.ndim != 2 \
            or user_factors.shape[1] != item_factors.shape[1]:
        raise ModelError(f"factor shapes do not agree: users {user_factors.shape}, "
                         f"items {item_factors.shape}")
    if user_factors.shape[0] != n_users or item_factors.shape[0] != n_items:
        raise ModelError(f"factors are {user_factors.shape[0]} users x {item_factors.shape[0]} "
                         f"items, user_items is {n_users} x {n_items}")
    wanted = None if users is None else np.asarray(users, dtype=np.int64)
    if wanted is not None and wanted.size and (wanted.min() < 0 or wanted.max() >= n_users):
        raise ModelError(f"users must be row indices in [0, {n_users})")
    n_rows = n_users if wanted is None else len(wanted)
    torch = import_torch()
    dev = resolve_device(device)

    start_time = time.perf_counter()
    n_ask = min(n, n_items)
    out_items = np.full((n_rows, n), PAD_ITEM, dtype=np.int32)
    out_scores = np.full((n_rows, n), PAD_SCORE, dtype=np.float32)
    items_t = torch.as_tensor(np.ascontiguousarray(item_factors, dtype=np.float32),
                              device=dev).T  # (f, n_items): a view, matmul reads it as is
    with torch.inference_mode():
        for start in range(0, n_rows, batch_size):
            stop = min(start + batch_size, n_rows)
            if wanted is None:  # contiguous users: slice factors and CSR without copying rows
                batch_factors = user_factors[start:stop]
                indptr = user_items.indptr[start:stop + 1]
                seen_items = user_items.indices[indptr[0]:indptr[-1]]
            else:
                batch_factors = user_factors[wanted[start:stop]]
                rows = user_items[wanted[start:stop]]
                indptr, seen_items = rows.indptr, rows.indices
            scores = torch.as_tensor(np.ascontiguousarray(batch_factors, dtype=np.float32),
                                     device=dev) @ items_t
            _mask_seen(torch, scores, np.diff(indptr), seen_items, dev)
            top_scores, top_items = torch.topk(scores, n_ask, dim=1, largest=True, sorted=True)
            # -inf (seen) picks are padded by _pad, the padding rule of the CPU path
            ids, vals = _pad(top_items.cpu().numpy(), top_scores.cpu().numpy(), n)
            out_items[start:stop], out_scores[start:stop] = ids, vals
    log.info("scored %d users x %d items (top %d) with torch on %s in %.2fs", n_rows, n_items,
             n, dev, time.perf_counter() - start_time)
    return out_items, out_scores


def _mask_seen(torch: Any, scores: Any, row_lengths: np.ndarray, seen_items: np.ndarray,
               device: Any) -> None:
    """Set scores[r, j] = -inf in place for every j in CSR row r (lengths `row_lengths`)."""
    nnz = int(seen_items.size)
    if nnz == 0:
        return
    lengths = torch.as_tensor(row_lengths.astype(np.int64, copy=False), device=device)
    rows = torch.repeat_interleave(torch.arange(len(row_lengths), device=device), lengths,
                                   output_size=nnz)
    cols = torch.as_tensor(np.ascontiguousarray(seen_items), device=device).long()
    scores.index_put_((rows, cols), torch.tensor(float("-inf"), device=device))
