"""Validate a batch against its data contract with Great Expectations 1.x.

The contract lives in reviewable suite files, ``expectations/{users,items,interactions}.json``
(GE's ExpectationSuite JSON: ``name``, ``expectations: [{type, kwargs, meta}]``). Each run builds
an ephemeral GE context in code (cheap: no files, no analytics), registers one pandas dataframe
asset per table and runs one ValidationDefinition per suite with an explicit result format, so
every failure carries a sample of offending values.

Checks that GE cannot express on the raw column (timestamp parseability, numeric rating/weight)
run on helper columns added to a *copy* of the frame; their names start with ``_`` and the
suite's ``meta.column`` names the input column they check.
"""

from __future__ import annotations

import json
import logging
import math
import os
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from ingest.reader import (
    DATASETS,
    TIMESTAMP_MAX,
    TIMESTAMP_MIN,
    Batch,
    parse_timestamps,
)
from recsys.errors import InputFileError

logger = logging.getLogger(__name__)

SAMPLE_SIZE = 10
_DATASOURCE = "ingest"
_BATCH_DEFINITION = "whole_dataframe"
# Expectations whose offending values are nulls: the sample lists rows, not values.
_NULL_EXPECTATIONS = {"expect_column_values_to_not_be_null"}


@dataclass
class ValidationReport:
    """Outcome of validating one batch.

    Attributes:
        success: True when every expectation of every suite passed.
        failures: one dict per failed expectation: ``dataset``, ``file``, ``expectation``
            (GE type), ``rule`` (suite meta), ``column`` (input column), ``observed`` (text),
            ``sample`` (at most 10 offending values or rows) and ``kwargs``.
        suites: one summary dict per suite: ``suite``, ``dataset``, ``file``, ``success``,
            ``rows``, ``evaluated``, ``successful``, ``unsuccessful``, ``seconds``.
    """

    success: bool
    failures: list[dict[str, Any]] = field(default_factory=list)
    suites: list[dict[str, Any]] = field(default_factory=list)

    @classmethod
    def from_input_error(cls, error: InputFileError, *, dataset: str | None = None
                         ) -> ValidationReport:
        """A failed report for a batch that could not even be read (for quarantine)."""
        failure = {
            "dataset": dataset or _dataset_from_path(error.path),
            "file": str(error.path),
            "expectation": "readable_input_file",
            "rule": error.rule,
            "column": error.column,
            "observed": error.problem,
            "sample": [],
            "kwargs": {},
        }
        return cls(success=False, failures=[failure], suites=[])

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe dict (``json.dumps`` works on it as is)."""
        return _json_safe({"success": self.success, "failures": self.failures,
                           "suites": self.suites})

    def to_markdown(self) -> str:
        """A short human report: verdict, per-suite table, one section per failure."""
        lines = [f"# Batch validation: {'PASSED' if self.success else 'FAILED'}", ""]
        if self.suites:
            lines += ["| suite | file | rows | evaluated | failed | result |",
                      "|---|---|---:|---:|---:|---|"]
            for s in self.suites:
                lines.append(
                    f"| {s['suite']} | `{s.get('file')}` | {s.get('rows')} | {s['evaluated']} "
                    f"| {s['unsuccessful']} | {'ok' if s['success'] else 'FAILED'} |"
                )
            lines.append("")
        if self.failures:
            lines += [f"## Failures ({len(self.failures)})", ""]
            for i, f in enumerate(self.failures, 1):
                col = f" column `{f['column']}`" if f.get("column") else ""
                lines.append(f"### {i}. {f['dataset']}:{col} {f.get('rule') or f['expectation']}")
                lines.append("")
                lines.append(f"- file: `{f.get('file')}`")
                lines.append(f"- expectation: `{f['expectation']}`")
                if f.get("observed") is not None:
                    lines.append(f"- observed: {f['observed']}")
                if f.get("sample"):
                    sample = json.dumps(_json_safe(f["sample"]), ensure_ascii=False)
                    lines.append(f"- sample: `{sample}`")
                lines.append("")
        return "\n".join(lines).rstrip() + "\n"


def validate_batch(
    batch: Batch,
    *,
    expectations_dir: Path,
    known_user_ids: Iterable[str] | None = None,
    known_item_ids: Iterable[str] | None = None,
) -> ValidationReport:
    """Run the three suites of `expectations_dir` on `batch` (raw frames from `read_batch`).

    Interactions may reference users/items of this batch or the ids in `known_user_ids` /
    `known_item_ids` (ids of earlier batches).

    Returns:
        The report; this function never raises on bad data (the caller decides, typically
        quarantine + `recsys.errors.ValidationFailed`).

    Raises:
        FileNotFoundError: a suite file is missing from `expectations_dir`.
    """
    gx = _import_gx()
    started = time.perf_counter()
    expectations_dir = Path(expectations_dir)
    context = gx.get_context(mode="ephemeral")
    _disable_progress_bars(context)
    datasource = context.data_sources.add_or_update_pandas(_DATASOURCE)

    known = {
        "user_id": _id_set(batch.users, "user_id", known_user_ids),
        "item_id": _id_set(batch.items, "item_id", known_item_ids),
    }
    result_format = {
        "result_format": "SUMMARY",
        "partial_unexpected_count": SAMPLE_SIZE,
        "include_unexpected_rows": False,
    }

    failures: list[dict[str, Any]] = []
    suites: list[dict[str, Any]] = []
    for dataset in DATASETS:
        t0 = time.perf_counter()
        suite = _load_suite(gx, context, expectations_dir / f"{dataset}.json")
        frame = _prepare_frame(dataset, batch.frame(dataset), known)
        definition = _get_or_create_validation(gx, context, datasource, dataset, suite)
        result = definition.run(
            batch_parameters={"dataframe": frame},
            result_format=result_format,
        )
        file = str(batch.sources.get(dataset, batch.input_dir / dataset))
        suite_failures = _collect_failures(result, suite, dataset, file, frame)
        failures.extend(suite_failures)
        stats = result.statistics
        suites.append({
            "suite": suite.name,
            "dataset": dataset,
            "file": file,
            "success": bool(result.success),
            "rows": len(frame),
            "evaluated": int(stats["evaluated_expectations"]),
            "successful": int(stats["successful_expectations"]),
            "unsuccessful": int(stats["unsuccessful_expectations"]),
            "seconds": round(time.perf_counter() - t0, 3),
        })
    report = ValidationReport(success=not failures and all(s["success"] for s in suites),
                              failures=failures, suites=suites)
    logger.info("validated batch %s in %.2fs: %s (%d failures)", batch.input_dir,
                time.perf_counter() - started, "passed" if report.success else "FAILED",
                len(failures))
    return report


# ---------------------------------------------------------------------------------------------
# GE plumbing
# ---------------------------------------------------------------------------------------------


def _import_gx() -> Any:
    # Library switch, not configuration: GE phones home unless told not to (PITFALLS.md).
    os.environ.setdefault("GX_ANALYTICS_ENABLED", "False")
    import great_expectations as gx

    return gx


def _disable_progress_bars(context: Any) -> None:
    from great_expectations.data_context.types.base import ProgressBarsConfig

    context.variables.progress_bars = ProgressBarsConfig(globally=False,
                                                         metric_calculations=False)


def _load_suite(gx: Any, context: Any, path: Path) -> Any:
    if not path.is_file():
        raise FileNotFoundError(f"expectation suite not found: {path}")
    spec = json.loads(path.read_text(encoding="utf-8"))
    suite = gx.ExpectationSuite(
        name=spec["name"],
        expectations=spec.get("expectations", []),
        meta=spec.get("meta"),
    )
    return context.suites.add_or_update(suite)


def _get_or_create_validation(gx: Any, context: Any, datasource: Any, dataset: str,
                              suite: Any) -> Any:
    try:
        asset = datasource.get_asset(dataset)
    except LookupError:
        asset = datasource.add_dataframe_asset(name=dataset)
    try:
        batch_definition = asset.get_batch_definition(_BATCH_DEFINITION)
    except (KeyError, LookupError):
        batch_definition = asset.add_batch_definition_whole_dataframe(_BATCH_DEFINITION)
    name = f"ingest_{dataset}"
    definition = gx.ValidationDefinition(name=name, data=batch_definition, suite=suite)
    return context.validation_definitions.add_or_update(definition)


# ---------------------------------------------------------------------------------------------
# Frames and results
# ---------------------------------------------------------------------------------------------


def _id_set(frame: pd.DataFrame, column: str, known: Iterable[str] | None) -> set[str]:
    ids: set[str] = set()
    if column in frame.columns:
        ids.update(str(v) for v in frame[column].dropna().unique())
    if known is not None:
        ids.update(str(v) for v in known)
    return ids


def _prepare_frame(dataset: str, frame: pd.DataFrame, known: dict[str, set[str]]
                   ) -> pd.DataFrame:
    """Shallow copy of `frame` plus the helper columns the suite of `dataset` refers to.

    Interactions get, for each check GE cannot run on the raw column, a helper that holds the
    raw offending value (null elsewhere) so the suite expects it null and the report samples
    show the culprits: ``_user_id_unknown``, ``_item_id_unknown``, ``_timestamp_unparseable``,
    ``_timestamp_out_of_range``, ``_rating_unparseable``, ``_weight_unparseable``; and numeric
    ``_rating_value`` / ``_weight_value`` for range checks.
    """
    frame = frame.copy(deep=False)
    if dataset != "interactions":
        return frame
    n = len(frame)
    empty = pd.Series([None] * n, index=frame.index, dtype="object")
    for column, ids in known.items():
        if column in frame.columns:
            raw = frame[column]
            unknown = raw.notna() & ~raw.astype("object").isin(ids)
            frame[f"_{column}_unknown"] = raw.astype("object").where(unknown, None)
        else:
            frame[f"_{column}_unknown"] = empty
    if "timestamp" in frame.columns:
        raw = frame["timestamp"]
        parsed = parse_timestamps(raw)
        bad = parsed.isna() & raw.notna()
        frame["_timestamp_unparseable"] = raw.astype("object").where(bad, None)
        out = parsed.notna() & ((parsed < TIMESTAMP_MIN) | (parsed >= TIMESTAMP_MAX))
        frame["_timestamp_out_of_range"] = raw.astype("object").where(out, None)
    else:
        frame["_timestamp_unparseable"] = empty
        frame["_timestamp_out_of_range"] = empty
    for column in ("rating", "weight"):
        if column in frame.columns:
            raw = frame[column]
            value = pd.to_numeric(raw, errors="coerce").astype("float64")
            if pd.api.types.is_bool_dtype(raw.dtype):
                value[:] = float("nan")
            frame[f"_{column}_value"] = value
            frame[f"_{column}_unparseable"] = raw.astype("object").where(
                value.isna() & raw.notna(), None)
        else:
            frame[f"_{column}_value"] = pd.Series(float("nan"), index=frame.index)
            frame[f"_{column}_unparseable"] = empty
    return frame


def _collect_failures(result: Any, suite: Any, dataset: str, file: str,
                      frame: pd.DataFrame) -> list[dict[str, Any]]:
    order = {e.id: i for i, e in enumerate(suite.expectations)}
    meta_by_id = {e.id: (e.meta or {}) for e in suite.expectations}
    rows = sorted(result.results,
                  key=lambda r: order.get(getattr(r.expectation_config, "id", None), 1 << 30))
    failures = []
    for r in rows:
        if r.success:
            continue
        config = r.expectation_config
        meta = meta_by_id.get(getattr(config, "id", None)) or (config.meta or {})
        kwargs = {k: v for k, v in (config.kwargs or {}).items() if k != "batch_id"}
        column = meta.get("column") or kwargs.get("column")
        observed, sample = _describe(config.type, r, frame)
        failures.append({
            "dataset": dataset,
            "file": file,
            "expectation": config.type,
            "rule": meta.get("rule"),
            "column": column,
            "observed": observed,
            "sample": sample,
            "kwargs": _short_kwargs(kwargs),
        })
    return failures


def _describe(kind: str, r: Any, frame: pd.DataFrame) -> tuple[str, list[Any]]:
    info = r.exception_info or {}
    errors = _exception_messages(info)
    if errors:
        return f"could not evaluate: {errors[0]}", []
    res = r.result or {}
    if kind == "expect_column_to_exist":
        return f"column missing (columns: {', '.join(map(str, frame.columns))})", []
    if "unexpected_count" in res:
        count, total = res.get("unexpected_count") or 0, res.get("element_count") or 0
        pct = 100.0 * count / total if total else 0.0
        observed = f"{count} of {total} rows unexpected ({pct:.2f}%)"
        indexes = list(res.get("partial_unexpected_index_list") or [])[:SAMPLE_SIZE]
        if kind in _NULL_EXPECTATIONS and indexes:
            sample = [_row(frame, i) for i in indexes]
        else:
            values = list(res.get("partial_unexpected_list") or [])
            if kind == "expect_column_values_to_be_unique":
                values = list(dict.fromkeys(values))
            sample = values[:SAMPLE_SIZE]
        return observed, _json_safe(sample)
    if "observed_value" in res:
        return f"observed value {res['observed_value']!r}", []
    return "failed", []


def _exception_messages(info: dict[str, Any]) -> list[str]:
    if info.get("raised_exception"):
        return [str(info.get("exception_message"))]
    messages = []
    for value in info.values():
        if isinstance(value, dict) and value.get("raised_exception"):
            messages.append(str(value.get("exception_message")))
    return messages


def _row(frame: pd.DataFrame, index: Any) -> dict[str, Any]:
    try:
        row = frame.loc[index]
    except KeyError:
        return {"_row": index}
    data = {"_row": index}
    data.update({str(k): v for k, v in row.items() if not str(k).startswith("_")})
    return data


def _short_kwargs(kwargs: dict[str, Any]) -> dict[str, Any]:
    out = {}
    for key, value in kwargs.items():
        if isinstance(value, list | tuple | set) and len(value) > 20:
            out[key] = f"<{len(value)} values>"
        else:
            out[key] = value
    return _json_safe(out)


def _json_safe(value: Any) -> Any:
    """Turn numpy/pandas scalars, NaN/NaT and containers into plain JSON values."""
    if isinstance(value, dict):
        return {str(k): _json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple | set):
        return [_json_safe(v) for v in value]
    if isinstance(value, pd.Timestamp):
        return None if pd.isna(value) else value.isoformat()
    if hasattr(value, "tolist") and not isinstance(value, str):  # numpy arrays and scalars
        return _json_safe(value.tolist())
    if isinstance(value, float):
        return None if math.isnan(value) else (value if math.isfinite(value) else str(value))
    if value is None or isinstance(value, str | int | bool):
        return value
    if isinstance(value, bytes):
        return value.decode("utf-8", errors="replace")
    try:
        if pd.isna(value):
            return None
    except (TypeError, ValueError):
        pass
    return str(value)


def _dataset_from_path(path: Path) -> str:
    stem = Path(path).name.split(".")[0]
    return stem if stem in DATASETS else "batch"
