"""Helper columns that let the suites check what GE cannot express on a raw column.

`prepare_frame` returns a shallow copy of a table (or chunk) plus columns whose names start
with ``_`` (`HELPER_PREFIX`): parsed timestamps and numbers, and references to unknown ids.
Each holds the raw offending value (null elsewhere), so the suite expects it null and the
report's samples show the culprits; the suite's ``meta.column`` names the input column checked.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable
from typing import Any

import pandas as pd

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
        as_text = raw.astype("object").where(raw.isna(), raw.astype("str"))
        unknown = raw.notna() & ~_is_known(as_text, ids)
        frame[f"_{column}_unknown"] = raw.astype("object").where(unknown, None)
    if "timestamp" in frame.columns:
        raw = frame["timestamp"]
        parsed = parse_timestamps(raw)
        bad = parsed.isna() & raw.notna()
        frame["_timestamp_unparseable"] = raw.astype("object").where(bad, None)
        out = parsed.notna() & ((parsed < TIMESTAMP_MIN) | (parsed >= TIMESTAMP_MAX))
        frame["_timestamp_out_of_range"] = raw.astype("object").where(out, None)
        future = parsed.notna() & ~out & (parsed > latest) if latest is not None else out & False
        frame["_timestamp_in_future"] = raw.astype("object").where(future, None)
    else:
        for helper in ("_timestamp_unparseable", "_timestamp_out_of_range",
                       "_timestamp_in_future"):
            frame[helper] = empty
    for column in ("rating", "weight"):
        _numeric_helpers(frame, column, empty)
    return frame


def _is_known(values: pd.Series, ids: Collection[str]) -> pd.Series:
    if isinstance(ids, pd.Index):  # its hash table is built once, not once per chunk
        return pd.Series(ids.get_indexer(values) >= 0, index=values.index)
    return values.isin(ids)


def _numeric_helpers(frame: pd.DataFrame, column: str, empty: pd.Series) -> None:
    if column in frame.columns:
        raw = frame[column]
        if pd.api.types.is_bool_dtype(raw.dtype):
            value = pd.Series(float("nan"), index=frame.index)
        else:
            value = pd.to_numeric(raw, errors="coerce").astype("float64")
        frame[f"_{column}_value"] = value
        frame[f"_{column}_unparseable"] = raw.astype("object").where(
            value.isna() & raw.notna(), None)
    else:
        frame[f"_{column}_value"] = pd.Series(float("nan"), index=frame.index)
        frame[f"_{column}_unparseable"] = empty
