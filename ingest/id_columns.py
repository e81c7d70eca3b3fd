"""Id columns of the batch tables as text: the one conversion rule for ids.

Ids are strings everywhere downstream (MongoDB, the API), whatever their type in the file:
``7`` and ``7.0`` become ``"7"``, ``"007"`` stays ``"007"``. Whitespace around an id is trimmed
(``" u1 "`` is ``"u1"``), so a stray space never makes another user or item; an id of only
whitespace becomes ``""``, which the contract's ``id_not_blank`` rule rejects. The reader applies
this to every table as it reads it (before validation), and normalisation again (a no-op then).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pandas as pd

ID_COLUMNS: dict[str, tuple[str, ...]] = {
    "users": ("user_id",),
    "items": ("item_id",),
    "interactions": ("user_id", "item_id"),
}


def ids_as_str(frame: pd.DataFrame, dataset: str) -> pd.DataFrame:
    """`frame` with its id columns (`ID_COLUMNS`) as strings, in place; returns it."""
    for column in ID_COLUMNS[dataset]:
        if column in frame.columns:
            frame[column] = to_id_strings(frame[column])
    return frame


def to_id_strings(series: pd.Series) -> pd.Series:
    """Return `series` as strings with whitespace around each id trimmed, keeping nulls;
    integral floats lose their ``.0``."""
    return _as_id_strings(series).str.strip()


def _as_id_strings(series: pd.Series) -> pd.Series:
    dtype = series.dtype
    if pd.api.types.is_string_dtype(dtype) and not pd.api.types.is_object_dtype(dtype):
        return series
    if pd.api.types.is_bool_dtype(dtype) or pd.api.types.is_integer_dtype(dtype):
        return series.astype("str")
    if pd.api.types.is_float_dtype(dtype):
        return _floatids_as_str(series)
    if pd.api.types.infer_dtype(series, skipna=True) in ("string", "empty"):
        return series.astype("str")
    # Mixed objects (bytes, numbers and text together): rare, converted value by value.
    return series.map(_id_to_str, na_action="ignore").astype("str")


def _floatids_as_str(series: pd.Series) -> pd.Series:
    values = series.to_numpy(dtype="float64", na_value=np.nan)
    text = series.astype("str")  # str(float) for non-integral values; NaN stays null
    integral = np.isfinite(values) & (np.floor(values) == values)
    exact = integral & (np.abs(values) < 2.0**63)
    if exact.any():
        integers = pd.Series(values[exact].astype("int64"), dtype="int64")
        text[exact] = integers.astype("str").to_numpy()
    huge = integral & ~exact
    if huge.any():  # beyond int64: Python's int gives the exact digits
        text[huge] = [str(int(v)) for v in values[huge]]
    return text


def _id_to_str(value: Any) -> str:
    if isinstance(value, bytes):
        return value.decode("utf-8", errors="replace")
    if isinstance(value, float) and math.isfinite(value) and value.is_integer():
        return str(int(value))
    return str(value)
