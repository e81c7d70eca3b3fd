"""Interactions parquet -> a users x items CSR matrix with id <-> index maps.

The feature store writes one or more parquet files with at least `user_id` (string), `item_id`
(string) and `weight` (float > 0, confidence already aggregated per user-item pair), and also
`last_ts` (the pair's last event), which a chronological holdout split reads. Everything here is
vectorised (pyarrow dictionary encoding + numpy); there are no per-row Python loops.
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds
import scipy.sparse as sp

from recsys.errors import InputFileError, ModelError

log = logging.getLogger(__name__)

REQUIRED_COLUMNS = ("user_id", "item_id", "weight")
LAST_TS_COLUMN = "last_ts"
_INT32_MAX = np.iinfo(np.int32).max
_TICKS_PER_SECOND = {"s": 1.0, "ms": 1e3, "us": 1e6, "ns": 1e9}


@dataclass(frozen=True)
class InteractionMatrix:
    """A users x items confidence matrix and the ids of its rows and columns.

    Attributes:
        user_ids: (n_users,) object array of str, sorted, unique; row i is user_ids[i].
        item_ids: (n_items,) object array of str, sorted, unique; column j is item_ids[j].
        matrix: (n_users, n_items) CSR, float32 data, int32 indices/indptr, duplicates summed,
            sorted indices.
        last_ts: None, or (nnz,) float64 seconds since the epoch of each pair's last event, in the
            order of `matrix.data` (the latest over duplicate rows; NaN where unknown). Only a
            chronological holdout split needs it.
    """

    user_ids: np.ndarray
    item_ids: np.ndarray
    matrix: sp.csr_matrix
    last_ts: np.ndarray | None = None

    def __post_init__(self) -> None:
        check_csr(self.matrix, name="InteractionMatrix.matrix")
        if self.matrix.shape != (len(self.user_ids), len(self.item_ids)):
            raise ModelError(f"InteractionMatrix shape {self.matrix.shape} does not match "
                             f"{len(self.user_ids)} user ids x {len(self.item_ids)} item ids")
        if self.last_ts is not None and (self.last_ts.dtype != np.float64
                                         or self.last_ts.shape != (self.matrix.nnz,)):
            raise ModelError(f"InteractionMatrix.last_ts must be float64 of shape "
                             f"({self.matrix.nnz},), got {self.last_ts.dtype} "
                             f"{self.last_ts.shape}")

    @property
    def n_users(self) -> int:
        return int(self.matrix.shape[0])

    @property
    def n_items(self) -> int:
        return int(self.matrix.shape[1])

    @property
    def n_interactions(self) -> int:
        return int(self.matrix.nnz)


def matrix_hash(data: InteractionMatrix) -> str:
    """sha256 over the ids and the CSR arrays: equal iff the training data is equal."""
    digest = hashlib.sha256()
    for ids in (data.user_ids, data.item_ids):
        digest.update("\x1f".join(ids.tolist()).encode())
        digest.update(b"\x1e")
    m = data.matrix
    for array in (m.indptr, m.indices, m.data):
        digest.update(np.ascontiguousarray(array).tobytes())
    return digest.hexdigest()


def check_csr(matrix: object, *, name: str = "matrix") -> sp.csr_matrix:
    """Raise ModelError unless `matrix` is a float32 / int32 `scipy.sparse.csr_matrix`.

    implicit's `recommend` requires `csr_matrix` (not `csr_array`); its GPU path rejects 64-bit
    indices (benfred/implicit#729).
    """
    if not isinstance(matrix, sp.csr_matrix):
        raise ModelError(f"{name} must be a scipy.sparse.csr_matrix, got {type(matrix).__name__}")
    if matrix.dtype != np.float32:
        raise ModelError(f"{name} must have float32 data, got {matrix.dtype}")
    if matrix.indices.dtype != np.int32 or matrix.indptr.dtype != np.int32:
        raise ModelError(f"{name} must have int32 indices, got {matrix.indices.dtype}/"
                         f"{matrix.indptr.dtype}")
    return matrix


def to_csr(matrix: sp.spmatrix | sp.sparray | np.ndarray) -> sp.csr_matrix:
    """Convert anything sparse-like to a canonical float32/int32 csr_matrix (duplicates summed)."""
    m = sp.csr_matrix(matrix, dtype=np.float32)
    m.sum_duplicates()  # also sorts indices
    if m.nnz > _INT32_MAX:
        raise ModelError(f"matrix has {m.nnz} non-zeros, more than int32 indices can address")
    m.indices = m.indices.astype(np.int32, copy=False)
    m.indptr = m.indptr.astype(np.int32, copy=False)
    return m


def build_matrix(user_ids: np.ndarray, item_ids: np.ndarray, weights: np.ndarray,
                 last_ts: np.ndarray | None = None) -> InteractionMatrix:
    """Build an InteractionMatrix from parallel arrays of ids and weights (vectorised).

    Ids are sorted; duplicate (user, item) pairs are summed. `last_ts` (seconds since the epoch,
    parallel to the ids) becomes the matrix's `last_ts`: the latest per pair, in CSR order.
    """
    users, user_codes = np.unique(np.asarray(user_ids, dtype=object), return_inverse=True)
    items, item_codes = np.unique(np.asarray(item_ids, dtype=object), return_inverse=True)
    return _from_codes(users, user_codes, items, item_codes, np.asarray(weights),
                       None if last_ts is None else np.asarray(last_ts, dtype=np.float64))


def _from_codes(users: np.ndarray, user_codes: np.ndarray, items: np.ndarray,
                item_codes: np.ndarray, weights: np.ndarray,
                last_ts: np.ndarray | None = None) -> InteractionMatrix:
    if len(users) == 0 or len(items) == 0:
        raise ModelError("no interactions: cannot build an empty matrix")
    if len(users) > _INT32_MAX or len(items) > _INT32_MAX:
        raise ModelError("too many users or items for int32 indices")
    coo = sp.coo_matrix(
        (weights.astype(np.float32, copy=False),
         (user_codes.astype(np.int32, copy=False), item_codes.astype(np.int32, copy=False))),
        shape=(len(users), len(items)),
    )
    pair_last_ts = (None if last_ts is None
                    else _latest_per_pair(user_codes, item_codes, len(items), last_ts))
    return InteractionMatrix(user_ids=users.astype(object), item_ids=items.astype(object),
                             matrix=to_csr(coo), last_ts=pair_last_ts)


def _latest_per_pair(user_codes: np.ndarray, item_codes: np.ndarray, n_items: int,
                     last_ts: np.ndarray) -> np.ndarray:
    """The maximum of `last_ts` over the rows of each distinct (user, item) pair, ordered by
    (user, item): the order of a canonical CSR's data once duplicate pairs are summed.

    NaN (an unknown time) in any row of a pair makes the pair's time NaN.
    """
    pair_keys = user_codes.astype(np.int64) * n_items + item_codes.astype(np.int64)
    order = np.argsort(pair_keys)
    sorted_keys = pair_keys[order]
    pair_starts = np.flatnonzero(np.concatenate(([True], sorted_keys[1:] != sorted_keys[:-1])))
    return np.maximum.reduceat(last_ts[order], pair_starts)


def _epoch_seconds(column: pa.ChunkedArray, path: Path) -> np.ndarray:
    """A timestamp column as float64 seconds since the epoch (UTC for zoned ones), NaN for nulls."""
    if not pa.types.is_timestamp(column.type):
        raise InputFileError(path, f"expected a timestamp, got {column.type}",
                             column=LAST_TS_COLUMN, rule="type")
    ticks = pc.cast(column.combine_chunks().cast(pa.int64()), pa.float64(), safe=False)
    return pc.fill_null(ticks, np.nan).to_numpy() / _TICKS_PER_SECOND[column.type.unit]


def _sorted_codes(column: pa.ChunkedArray) -> tuple[np.ndarray, np.ndarray]:
    """(sorted unique values, code per row) of a string column, plain or dictionary-encoded
    (as parquet's dictionary pages are read: no string is hashed again)."""
    if pa.types.is_dictionary(column.type):
        encoded = column.unify_dictionaries().combine_chunks()
    else:
        encoded = column.combine_chunks().dictionary_encode()
    dictionary = encoded.dictionary
    indices = encoded.indices.to_numpy(zero_copy_only=False)
    used = np.bincount(indices, minlength=len(dictionary)) > 0
    if not used.all():  # a dictionary page may hold values no row uses: they are no ids
        kept = np.flatnonzero(used)
        dictionary = dictionary.take(pa.array(kept))
        remap = np.zeros(len(used), dtype=np.int64)
        remap[kept] = np.arange(len(kept), dtype=np.int64)
        indices = remap[indices]
    order = pc.array_sort_indices(dictionary).to_numpy()
    rank = np.empty(len(order), dtype=np.int64)
    rank[order] = np.arange(len(order), dtype=np.int64)
    codes = rank[indices]
    values = dictionary.take(pa.array(order)).to_numpy(zero_copy_only=False).astype(object)
    return values, codes


def load_interactions(path: Path, *, with_last_ts: bool = False) -> InteractionMatrix:
    """Read the feature store's interactions parquet (a file or a directory of files).

    Args:
        path: a parquet file or a directory holding parquet files.
        with_last_ts: also read the `last_ts` column into `InteractionMatrix.last_ts` (for a
            chronological holdout split); off by default, as aligning it costs a sort of every
            row. A file without the column (an older snapshot) loads with `last_ts` None.

    Returns:
        The users x items matrix (float32 weights, duplicates summed) and sorted id arrays.

    Raises:
        InputFileError: the path is missing/unreadable, a required column is missing, null,
            of the wrong type, or a weight is not a finite positive number, or there are no rows;
            or `last_ts` is read and is not a timestamp.
    """
    path = Path(path)
    if not path.exists():
        raise InputFileError(path, "does not exist")
    # ids read as parquet stores them, dictionary-encoded: ~3x faster than reading the strings
    # and encoding them again
    parquet = ds.ParquetFileFormat(
        read_options=ds.ParquetReadOptions(dictionary_columns=["user_id", "item_id"]))
    try:
        dataset = ds.dataset(path, format=parquet)
        schema = dataset.schema
    except (OSError, pa.ArrowInvalid) as exc:
        raise InputFileError(path, f"cannot read parquet: {exc}") from exc
    for name in REQUIRED_COLUMNS:
        if name not in schema.names:
            raise InputFileError(path, "required column is missing", column=name,
                                 rule="required_columns")
    read_last_ts = with_last_ts and LAST_TS_COLUMN in schema.names
    table = dataset.to_table(columns=list(REQUIRED_COLUMNS)
                             + ([LAST_TS_COLUMN] if read_last_ts else []))
    if table.num_rows == 0:
        raise InputFileError(path, "no interactions", rule="non_empty")

    columns = {}
    for name in ("user_id", "item_id"):
        col = table.column(name)
        if pa.types.is_dictionary(col.type) and not (
                pa.types.is_string(col.type.value_type)
                and all(chunk.dictionary.null_count == 0 for chunk in col.chunks)):
            col = col.cast(col.type.value_type)  # kept encoded only when plain, null-free text
        if pa.types.is_integer(col.type) or pa.types.is_large_string(col.type):
            col = col.cast(pa.string())
        text = col.type.value_type if pa.types.is_dictionary(col.type) else col.type
        if not pa.types.is_string(text):
            raise InputFileError(path, f"expected strings, got {col.type}", column=name,
                                 rule="type")
        if col.null_count:
            raise InputFileError(path, f"{col.null_count} null value(s)", column=name,
                                 rule="not_null")
        columns[name] = col

    weight_col = table.column("weight")
    if not (pa.types.is_floating(weight_col.type) or pa.types.is_integer(weight_col.type)):
        raise InputFileError(path, f"expected a number, got {weight_col.type}", column="weight",
                             rule="type")
    if weight_col.null_count:
        raise InputFileError(path, f"{weight_col.null_count} null value(s)", column="weight",
                             rule="not_null")
    weights = weight_col.to_numpy().astype(np.float64, copy=False)
    bad = ~(np.isfinite(weights) & (weights > 0))
    if bad.any():
        raise InputFileError(path, f"{int(bad.sum())} weight(s) not finite and > 0",
                             column="weight", rule="positive")

    last_ts = _epoch_seconds(table.column(LAST_TS_COLUMN), path) if read_last_ts else None
    if with_last_ts and not read_last_ts:
        log.info("%s has no %s column: no pair times loaded", path, LAST_TS_COLUMN)

    users, user_codes = _sorted_codes(columns["user_id"])
    items, item_codes = _sorted_codes(columns["item_id"])
    data = _from_codes(users, user_codes, items, item_codes, weights, last_ts)
    log.info("loaded %d interactions (%d rows) for %d users x %d items from %s",
             data.n_interactions, table.num_rows, data.n_users, data.n_items, path)
    return data
