"""Great Expectations results read into the report's entries: one per expectation, with an
observed value, a sample of offending values and the offending rows (by row number).

Values from the batch are shortened here, where they enter the report (`ingest.sanitize`), so
no message, report or artifact built from an entry can carry a huge value.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pandas as pd

from ingest.report import json_safe
from ingest.sanitize import short_text, short_value

# Offending values and rows kept per failed expectation (GE's ``partial_unexpected_count``).
SAMPLE_SIZE = 10
# Helper columns added for validation (`ingest.helper_columns`) start with this.
HELPER_PREFIX = "_"
SCHEMA_EXPECTATION = "expect_table_columns_to_match_set"
# Expectations whose offending values are nulls: the sample lists rows, not values.
_NULL_EXPECTATIONS = {"expect_column_values_to_not_be_null"}


def collect_results(result: Any, suite: Any, dataset: str, file: str,
                    row_of: Callable[[Any], dict[str, Any]], input_columns: list[str], *,
                    rows_named: bool = False) -> list[dict[str, Any]]:
    """One entry per expectation result, in suite order.

    `row_of` gives an offending row (by index label) as a JSON-safe dict. With `rows_named`
    every map result counts as naming all its offending rows (chunked runs name them chunk by
    chunk) even though the merged result lists only a sample.
    """
    order = {e.id: i for i, e in enumerate(suite.expectations)}
    meta_by_id = {e.id: (e.meta or {}) for e in suite.expectations}
    rows = sorted(result.results,
                  key=lambda r: order.get(getattr(r.expectation_config, "id", None), 1 << 30))
    entries = []
    for r in rows:
        config = r.expectation_config
        meta = meta_by_id.get(getattr(config, "id", None)) or (config.meta or {})
        kwargs = {k: v for k, v in (config.kwargs or {}).items() if k != "batch_id"}
        column = meta.get("column") or kwargs.get("column")
        res = r.result or {}
        errored = bool(exception_messages(r.exception_info or {}))
        observed, sample, indexes = _describe(config.type, r, row_of, input_columns)
        entries.append({
            "suite": suite.name,
            "dataset": dataset,
            "file": file,
            "expectation": config.type,
            "rule": meta.get("rule"),
            "column": column,
            "success": bool(r.success),
            "observed": observed,
            "sample": sample,
            "rows": [row_of(i) for i in indexes[:SAMPLE_SIZE]],
            "kwargs": _short_kwargs(kwargs),
            # Row-level: GE named every offending row and no tolerated share ("mostly") applies.
            "row_level": (not errored
                          and ("unexpected_index_list" in res
                               or (rows_named and "unexpected_count" in res))
                          and kwargs.get("mostly") in (None, 1, 1.0)),
            "index": list(res.get("unexpected_index_list") or []),
        })
    return entries


def _describe(kind: str, r: Any, row_of: Callable[[Any], dict[str, Any]],
              input_columns: list[str]) -> tuple[str, list[Any], list[Any]]:
    info = r.exception_info or {}
    errors = exception_messages(info)
    if errors:
        return short_text(f"could not evaluate: {errors[0]}"), [], []
    res = r.result or {}
    if kind == "expect_column_to_exist":
        if r.success:
            return "present", [], []
        return short_text(f"column missing (columns: {', '.join(map(str, input_columns))})",
                          2000), [], []
    if kind == SCHEMA_EXPECTATION:
        mismatched = (res.get("details") or {}).get("mismatched") or {}
        parts = [f"{key} columns: {', '.join(mismatched[key])}"
                 for key in ("unexpected", "missing") if mismatched.get(key)]
        if parts:
            return short_text("; ".join(parts), 2000), [], []
        return short_text(f"columns: {', '.join(map(str, input_columns))}", 2000), [], []
    if "unexpected_count" in res:
        count, total = res.get("unexpected_count") or 0, res.get("element_count") or 0
        pct = 100.0 * count / total if total else 0.0
        observed = f"{count} of {total} rows unexpected ({pct:.2f}%)"
        indexes = list(res.get("partial_unexpected_index_list")
                       or res.get("unexpected_index_list") or [])[:SAMPLE_SIZE]
        if kind in _NULL_EXPECTATIONS and indexes:
            sample = [row_of(i) for i in indexes]
        else:
            values = list(res.get("partial_unexpected_list") or [])
            if kind in ("expect_column_values_to_be_unique",
                        "expect_compound_columns_to_be_unique"):
                values = list({json.dumps(json_safe(v), sort_keys=True): v
                               for v in values}.values())
            sample = values[:SAMPLE_SIZE]
        return observed, short_value(json_safe(sample)), indexes
    if "observed_value" in res:
        return short_text(f"observed value {res['observed_value']!r}"), [], []
    return "passed" if r.success else "failed", [], []


def exception_messages(info: dict[str, Any]) -> list[str]:
    """The messages of the exceptions GE caught while evaluating an expectation."""
    if info.get("raised_exception"):
        return [str(info.get("exception_message"))]
    messages = []
    for value in info.values():
        if isinstance(value, dict) and value.get("raised_exception"):
            messages.append(str(value.get("exception_message")))
    return messages


def row_dict(frame: pd.DataFrame, index: Any, columns: list[str] | None = None) -> dict[str, Any]:
    """One input row as a JSON-safe dict, values shortened; ``_row`` is its index label (row
    number)."""
    try:
        row = frame.loc[index]
    except KeyError:
        return {"_row": json_safe(index)}
    keep = set(columns) if columns is not None else None
    data: dict[str, Any] = {"_row": json_safe(index)}
    data.update({short_text(k): short_value(json_safe(v)) for k, v in row.items()
                 if (keep is None and not str(k).startswith(HELPER_PREFIX))
                 or (keep is not None and k in keep)})
    return data


def _short_kwargs(kwargs: dict[str, Any]) -> dict[str, Any]:
    out = {}
    for key, value in kwargs.items():
        if isinstance(value, list | tuple | set) and len(value) > 20:
            out[key] = f"<{len(value)} values>"
        else:
            out[key] = value
    return short_value(json_safe(out))
