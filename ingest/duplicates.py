"""Duplicate keys of a table read in chunks, as GE's ``expect_compound_columns_to_be_unique``
finds them in the whole table, without holding the table.

`KeyHashes` takes the key columns chunk by chunk and keeps two independent 64-bit hashes per
row (16 bytes a row: 800 MB at 50M rows); `KeyHashes.duplicated` then marks every row whose
key occurs more than once (every copy, as ``DataFrame.duplicated(keep=False)`` does, which is
GE's pandas implementation). Duplicates that straddle chunks are found like any other. A false
duplicate needs both hashes to collide, about n² / 2^129 for n rows (1e-23 at 50M rows).
The two hashes of a text are pandas' SipHash under two different keys, of the text itself:
a chunk's text column is factorized once and each distinct text hashed under both keys (the
value's hashes do not depend on the chunk or on how often it occurs).

Equality follows pandas' on the values validation sees: numbers compare by value (so an int
chunk and a float chunk agree, as a whole read's float column would), datetimes by instant,
text by its characters, and nulls equal each other. Rows whose key is entirely null are left
out, as GE's default ``ignore_row_if="all_values_are_missing"`` leaves them out (the other
settings are followed too). With
``numeric_text`` (CSV, where pandas types a column per chunk, numbers in one and text in
another) text that parses as a number compares as that number.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

# Two keys for pandas' SipHash of text (16 characters each) and two sets of 64-bit finalizer
# constants (SplitMix64's and MurmurHash3's fmix64): the two row hashes are independent.
_TEXT_KEYS = ("recsys-dupkey-h1", "recsys-dupkey-h2")
_MIX = ((np.uint64(0xBF58476D1CE4E5B9), np.uint64(0x94D049BB133111EB), 30, 27, 31),
        (np.uint64(0xFF51AFD7ED558CCD), np.uint64(0xC4CEB9FE1A85EC53), 33, 33, 33))
_ROW_MULTIPLIER = (np.uint64(0x9E3779B97F4A7C15), np.uint64(0xD6E8FEB86659FD93))
# Values of different kinds never compare equal: each kind is offset by its own constant.
_NULL, _NUMBER, _DATETIME, _TEXT = (np.uint64(c) for c in (
    0x6A09E667F3BCC908, 0xBB67AE8584CAA73B, 0x3C6EF372FE94F82B, 0xA54FF53A5F1D36F1))
_SEARCH_BLOCK = 4_000_000


def _mix(values: np.ndarray, which: int) -> np.ndarray:
    """A bijective 64-bit finalizer: distinct inputs stay distinct, bits are spread."""
    c1, c2, s1, s2, s3 = _MIX[which]
    x = values.astype(np.uint64, copy=True)
    x ^= x >> np.uint64(s1)
    x *= c1
    x ^= x >> np.uint64(s2)
    x *= c2
    x ^= x >> np.uint64(s3)
    return x


def _column_hashes(series: pd.Series, *, numeric_text: bool
                   ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Two hashes of every value of `series` and its null mask."""
    missing = series.isna().to_numpy(dtype=bool)
    raw = [np.full(len(series), _NULL, dtype=np.uint64) for _ in range(2)]
    dtype = series.dtype
    numbers: np.ndarray | None = None
    is_number = np.zeros(len(series), dtype=bool)
    if pd.api.types.is_bool_dtype(dtype) or pd.api.types.is_numeric_dtype(dtype):
        numbers = series.to_numpy(dtype="float64", na_value=np.nan)
        is_number = ~missing
    elif isinstance(dtype, pd.DatetimeTZDtype) or pd.api.types.is_datetime64_dtype(dtype):
        instants = series.array.asi8  # int64 in the column's unit; one unit per file
        present = ~missing
        for which in range(2):
            raw[which][present] = _mix(instants[present].view(np.uint64) ^ _DATETIME, which)
        return raw[0], raw[1], missing
    elif numeric_text:
        numbers = pd.to_numeric(series, errors="coerce").to_numpy(dtype="float64",
                                                                  na_value=np.nan)
        is_number = ~missing & ~np.isnan(numbers)
    if numbers is not None and is_number.any():
        canonical = numbers[is_number] + 0.0  # -0.0 becomes 0.0: they are equal
        bits = canonical.view(np.uint64) ^ _NUMBER
        for which in range(2):
            raw[which][is_number] = _mix(bits, which)
    is_text = ~missing & ~is_number
    if is_text.any():
        # Factorize once and hash each distinct text with both keys (what
        # ``categorize=True`` does, but once for the two keys); a pandas string column is
        # text already, other objects compare by their ``str``.
        values = series if bool(is_text.all()) else series[is_text]
        if not _is_plain_text(dtype):
            values = values.astype("str").to_numpy(dtype=object)
        codes, uniques = pd.factorize(values)
        text = np.asarray(uniques, dtype=object)
        whole = bool(is_text.all())
        for which in range(2):
            hashed = pd.util.hash_array(text, hash_key=_TEXT_KEYS[which], categorize=False)
            hashed = hashed[codes] ^ _TEXT
            if whole:
                raw[which] = hashed
            else:
                raw[which][is_text] = hashed
    return raw[0], raw[1], missing


def _is_plain_text(dtype: object) -> bool:
    """A pandas string dtype (``str``): every non-null value is a ``str`` already."""
    return isinstance(dtype, pd.StringDtype)


IGNORE_ROW_IF = ("all_values_are_missing", "any_value_is_missing", "never")


def row_key_hashes(frame: pd.DataFrame, columns: Sequence[str], *, numeric_text: bool = False,
                   ignore_row_if: str = "all_values_are_missing"
                   ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Two independent 64-bit hashes of each row's key (the values of `columns`, in order)
    and a mask of the rows GE leaves out under `ignore_row_if` (one of `IGNORE_ROW_IF`)."""
    if ignore_row_if not in IGNORE_ROW_IF:
        raise ValueError(f"ignore_row_if must be one of {IGNORE_ROW_IF}, got {ignore_row_if!r}")
    rows = len(frame)
    hashes = [np.full(rows, np.uint64(len(columns)), dtype=np.uint64) for _ in range(2)]
    all_missing = np.ones(rows, dtype=bool)
    any_missing = np.zeros(rows, dtype=bool)
    for column in columns:
        first, second, missing = _column_hashes(frame[column], numeric_text=numeric_text)
        all_missing &= missing
        any_missing |= missing
        for which, part in enumerate((first, second)):
            hashes[which] = _mix(hashes[which] * _ROW_MULTIPLIER[which] + part, which)
    ignored = {"all_values_are_missing": all_missing, "any_value_is_missing": any_missing,
               "never": np.zeros(rows, dtype=bool)}[ignore_row_if]
    return hashes[0], hashes[1], ignored


class KeyHashes:
    """Row-key hashes of a whole table, collected chunk by chunk in file order.

    Args:
        columns: the key columns.
        capacity: rows expected (an upper bound saves copies; the arrays grow if exceeded).
        ignore_row_if: which rows GE leaves out (`IGNORE_ROW_IF`; its default here too).
        numeric_text: compare number-like text as numbers (see the module docstring).
    """

    def __init__(self, columns: Sequence[str], *, capacity: int = 0,
                 ignore_row_if: str = "all_values_are_missing",
                 numeric_text: bool = False) -> None:
        self.columns = list(columns)
        self.ignore_row_if = ignore_row_if
        self.numeric_text = numeric_text
        self.rows = 0
        self._first = np.empty(max(capacity, 0), dtype=np.uint64)
        self._second = np.empty(max(capacity, 0), dtype=np.uint64)
        self._ignored = np.empty(max(capacity, 0), dtype=bool)

    def add(self, chunk: pd.DataFrame) -> None:
        """Hash the next rows of the table."""
        first, second, ignored = row_key_hashes(chunk, self.columns,
                                                numeric_text=self.numeric_text,
                                                ignore_row_if=self.ignore_row_if)
        end = self.rows + len(chunk)
        if end > len(self._first):
            size = max(end, 2 * len(self._first))
            self._first = np.resize(self._first, size)
            self._second = np.resize(self._second, size)
            self._ignored = np.resize(self._ignored, size)
        self._first[self.rows:end] = first
        self._second[self.rows:end] = second
        self._ignored[self.rows:end] = ignored
        self.rows = end

    @property
    def ignored(self) -> np.ndarray:
        """Rows left out (under the default, those whose key is entirely null)."""
        return self._ignored[:self.rows]

    def duplicated(self) -> np.ndarray:
        """Boolean mask over all rows: the key occurs more than once among considered rows.

        Vectorised: one sort of the first hash finds candidate keys, and only candidate rows
        are grouped on both hashes.
        """
        first, second, ignored = (self._first[:self.rows], self._second[:self.rows],
                                  self.ignored)
        mask = np.zeros(self.rows, dtype=bool)
        considered = np.flatnonzero(~ignored) if ignored.any() else None
        keys = first if considered is None else first[considered]
        if len(keys) < 2:
            return mask
        ordered = np.sort(keys)
        repeated = np.unique(ordered[1:][ordered[1:] == ordered[:-1]])
        del ordered
        if not len(repeated):
            return mask
        hit = np.zeros(len(keys), dtype=bool)
        for start in range(0, len(keys), _SEARCH_BLOCK):  # bounded temporaries
            block = keys[start:start + _SEARCH_BLOCK]
            position = np.minimum(np.searchsorted(repeated, block), len(repeated) - 1)
            hit[start:start + len(block)] = repeated[position] == block
        candidates = np.flatnonzero(hit)
        if considered is not None:
            candidates = considered[candidates]
        pairs = np.empty(len(candidates), dtype=[("first", np.uint64), ("second", np.uint64)])
        pairs["first"] = first[candidates]
        pairs["second"] = second[candidates]
        _, inverse, counts = np.unique(pairs, return_inverse=True, return_counts=True)
        mask[candidates[counts[inverse.ravel()] > 1]] = True
        return mask
