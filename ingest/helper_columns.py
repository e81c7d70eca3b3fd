"""Helper columns that let the suites check what GE cannot express on a raw column.

`prepare_frame` returns a shallow copy of a table (or chunk) plus columns whose names start
with ``_`` (`HELPER_PREFIX`): parsed timestamps and numbers, and references to unknown ids.
Each holds the raw offending value (null elsewhere), so the suite expects it null and the
report's samples show the culprits; the suite's ``meta.column`` names the input column checked.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from ingest.ge_results import HELPER_PREFIX, SCHEMA_EXPECTATION
from ingest.normalize import TIMESTAMP_MAX, TIMESTAMP_MIN, parse_timestamps

def id_set(frame: pd.DataFrame, column: str, known: Iterable[str] | None) -> set[str]:
    """The ids in `frame[column]` (as text) plus the `known` ones."""
    ids: set[str] = set()
    if column in frame.columns:
        ids.update(frame[column].dropna().astype("str").unique().tolist())
    if known is not None:
        ids.update(map(str, known))
    return ids


def _optional_columns(suite: Any) -> list[str]:
    """Input columns the schema expectation lists that no ``expect_column_to_exist`` requires."""
    required = {str(e.column) for e in suite.expectations
                if e.expectation_type == "expect_column_to_exist"}
    for expectation in suite.expectations:
        if expectation.expectation_type == SCHEMA_EXPECTATION:
            return [str(c) for c in expectation.column_set or []
                    if not str(c).startswith(HELPER_PREFIX) and str(c) not in required]
    return []


def prepare_frame(dataset: str, frame: pd.DataFrame, known: dict[str, Collection[str]], *,
                  suite: Any = None, latest: pd.Timestamp | None = None) -> pd.DataFrame:
    """Shallow copy of `frame` plus the helper columns the suite of `dataset` refers to.

    Optional contract columns missing from the file are added as nulls (so the schema
    expectation reports only real drift: unexpected columns, or missing required ones).
    Helpers hold the raw offending value (null elsewhere), so the suite
    expects them null and report samples show the culprits: users ``_age_unparseable``;
    interactions ``_user_id_unknown``, ``_item_id_unknown``, ``_timestamp_unparseable``,
    ``_timestamp_out_of_range``, ``_timestamp_in_future`` (after `latest`),
    ``_rating_unparseable``, ``_weight_unparseable``; numeric ``_age_value``, ``_rating_value``
    and ``_weight_value`` feed range checks.
    """
    frame = frame.copy(deep=False)
    empty = pd.Series(None, index=frame.index, dtype="object")
    if suite is not None:
        for column in _optional_columns(suite):
            if column not in frame.columns:
                frame[column] = empty
    if dataset == "users":
        _numeric_helpers(frame, "age", empty)
        return frame
    if dataset != "interactions":
        return frame
    for column, ids in known.items():
        raw = frame[column] if column in frame.columns else empty
        unknown = raw.notna() & ~_is_known(raw, ids)
        frame[f"_{column}_unknown"] = _only_where(raw, unknown)
    if "timestamp" in frame.columns:
        raw = frame["timestamp"]
        parsed = parse_timestamps(raw)
        bad = parsed.isna() & raw.notna()
        frame["_timestamp_unparseable"] = _only_where(raw, bad)
        out = parsed.notna() & ((parsed < TIMESTAMP_MIN) | (parsed >= TIMESTAMP_MAX))
        frame["_timestamp_out_of_range"] = _only_where(raw, out)
        future = parsed.notna() & ~out & (parsed > latest) if latest is not None else out & False
        frame["_timestamp_in_future"] = _only_where(raw, future)
    else:
        for helper in ("_timestamp_unparseable", "_timestamp_out_of_range",
                       "_timestamp_in_future"):
            frame[helper] = empty
    for column in ("rating", "weight"):
        _numeric_helpers(frame, column, empty)
    return frame


def _only_where(raw: pd.Series, mask: pd.Series) -> pd.Series:
    """``raw.astype(object).where(mask, None)``, converting only the rows of `mask` (few: the
    offending ones) instead of the whole column to Python objects."""
    out = pd.Series(np.full(len(raw), None, dtype=object), index=raw.index, dtype=object)
    hit = np.asarray(mask, dtype=bool)
    if hit.any():
        out.iloc[hit] = raw.iloc[hit].astype("object").to_numpy()
    return out


def _is_known(values: pd.Series, ids: Collection[str]) -> pd.Series:
    """Whether each value, as text, is one of `ids` (nulls: False)."""
    dtype = values.dtype
    if pd.api.types.is_string_dtype(dtype) and not pd.api.types.is_object_dtype(dtype):
        # Arrow-backed text: one hash lookup in C++, no Python objects.
        array = pa.chunked_array(pa.array(values.array, from_pandas=True))
        found = pc.is_in(array, value_set=_id_array(ids)).to_numpy(zero_copy_only=False)
        return pd.Series(found, index=values.index)
    as_text = values.astype("object").where(values.isna(), values.astype("str"))
    if isinstance(ids, pd.Index):  # its hash table is built once, not once per chunk
        return pd.Series(ids.get_indexer(as_text) >= 0, index=values.index)
    return as_text.isin(ids)


def _id_array(ids: Collection[str]) -> pa.Array:
    if isinstance(ids, pd.Index):
        return pa.array(ids.astype("str"), type=pa.string(), from_pandas=True)
    return pa.array(list(ids), type=pa.string())


def _numeric_helpers(frame: pd.DataFrame, column: str, empty: pd.Series) -> None:
    if column in frame.columns:
        raw = frame[column]
        if pd.api.types.is_bool_dtype(raw.dtype):
            value = pd.Series(float("nan"), index=frame.index)
        else:
            value = pd.to_numeric(raw, errors="coerce").astype("float64")
        frame[f"_{column}_value"] = value
        frame[f"_{column}_unparseable"] = _only_where(raw, value.isna() & raw.notna())
    else:
        frame[f"_{column}_value"] = pd.Series(float("nan"), index=frame.index)
        frame[f"_{column}_unparseable"] = empty
