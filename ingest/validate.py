"""Validate a batch against its data contract with Great Expectations 1.x.

The contract lives in reviewable suite files, ``expectations/{users,items,interactions}.json``
(GE's ExpectationSuite JSON: ``name``, ``expectations: [{type, kwargs, meta}]``). Bounds that
operators tune (row counts, rating and age ranges, the duplicate bound, schema strictness) are
``{"$PARAMETER": name}`` values filled from `recsys.settings.Settings` by `suite_parameters`.

Each run builds an ephemeral GE context in code (no files, no analytics): one pandas dataframe
asset, batch definition, validation definition and checkpoint per table, run with an explicit
result format so every failure carries a sample of offending values and rows. With a
``docs_dir`` the run also builds GE Data Docs there (a filesystem site configured in code).

Per-dataset policy (`recsys.settings.DatasetContract`): ``fail`` rejects the batch on any failed
expectation; ``drop`` removes rows failing row-level expectations (kept aside by the caller,
see `split_invalid_rows`) unless they exceed ``max_invalid_fraction`` or a table-level
expectation (row count, schema, duplicate bound) fails. Users and items are validated first, so
interactions are checked against the users and items that survive.

Checks that GE cannot express on the raw column (timestamp parseability, numeric rating/weight/
age, references) run on helper columns added to a *copy* of the frame; their names start with
``_`` and the suite's ``meta.column`` names the input column they check.

A table too large to hold whole (`Batch.chunked`, interactions above
``Settings.validate_chunk_rows``) is validated chunk by chunk through one checkpoint and its
results merged into the report a whole-frame run would give (`_validate_chunked`); its row
count and duplicate keys are evaluated over the whole file (`ingest.duplicates`).
"""

from __future__ import annotations

import json
import logging
import math
import os
import time
from collections.abc import Callable, Collection, Iterable, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import pandas as pd

from ingest.reader import (
    DATASETS,
    TIMESTAMP_MAX,
    TIMESTAMP_MIN,
    Batch,
    TableChunks,
    parse_timestamps,
)
from recsys.errors import InputFileError
from recsys.settings import Settings

logger = logging.getLogger(__name__)

SAMPLE_SIZE = 10
HELPER_PREFIX = "_"
_DATASOURCE = "ingest"
_BATCH_DEFINITION = "whole_dataframe"
_DOCS_SITE = "run_docs"
_SCHEMA_EXPECTATION = "expect_table_columns_to_match_set"
# Expectations whose offending values are nulls: the sample lists rows, not values.
_NULL_EXPECTATIONS = {"expect_column_values_to_not_be_null"}


@dataclass
class ValidationReport:
    """Outcome of validating one batch.

    Attributes:
        success: True when the batch may be used (every expectation passed, or the rows that
            failed were dropped within the dataset's ``max_invalid_fraction``).
        failures: one dict per blocking failed expectation: ``dataset``, ``file``,
            ``expectation`` (GE type), ``rule`` (suite meta), ``column`` (input column),
            ``observed`` (text), ``sample`` (at most 10 offending values), ``rows`` (at most 10
            offending rows, with ``_row`` the row number) and ``kwargs``.
        suites: one summary dict per suite: ``suite``, ``dataset``, ``file``, ``success``,
            ``rows``, ``evaluated``, ``successful``, ``unsuccessful``, ``policy``, ``seconds``.
        results: one dict per expectation run (passed or not): ``suite``, ``expectation``,
            ``rule``, ``column``, ``success``, ``observed``.
        dropped: per dataset whose invalid rows were dropped: ``rows``, ``fraction``,
            ``max_invalid_fraction``, ``rules`` and, once written, ``file``.
        data_docs: path of the Data Docs ``index.html`` built for this run, if any.
        invalid_index: per dataset, the index labels of the rows to drop (not serialized).
        invalid_by_rule: per dataset, per rule, the index labels failing it (not serialized).
    """

    success: bool
    failures: list[dict[str, Any]] = field(default_factory=list)
    suites: list[dict[str, Any]] = field(default_factory=list)
    results: list[dict[str, Any]] = field(default_factory=list)
    dropped: dict[str, dict[str, Any]] = field(default_factory=dict)
    data_docs: str | None = None
    invalid_index: dict[str, pd.Index] = field(default_factory=dict, repr=False, compare=False)
    invalid_by_rule: dict[str, dict[str, pd.Index]] = field(default_factory=dict, repr=False,
                                                            compare=False)

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
            "rows": [],
            "kwargs": {},
        }
        result = {"suite": failure["dataset"], "expectation": "readable_input_file",
                  "rule": error.rule, "column": error.column, "success": False,
                  "observed": error.problem}
        return cls(success=False, failures=[failure], suites=[], results=[result])

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe dict (``json.dumps`` works on it as is)."""
        return _json_safe({"success": self.success, "failures": self.failures,
                           "suites": self.suites, "results": self.results,
                           "dropped": self.dropped, "data_docs": self.data_docs})

    def to_markdown(self) -> str:
        """The human report, also the flow's Prefect artifact.

        Verdict, a link to the run's Data Docs, a per-suite summary, a table of every
        expectation (suite, expectation, column, success, observed value), dropped rows, and
        one section per blocking failure with sample rows.
        """
        lines = [f"# Batch validation: {'PASSED' if self.success else 'FAILED'}", ""]
        if self.data_docs:
            lines += [f"Great Expectations Data Docs: [{self.data_docs}]"
                      f"({Path(self.data_docs).resolve().as_uri()})", ""]
        if self.suites:
            lines += ["| suite | file | rows | policy | evaluated | failed | result |",
                      "|---|---|---:|---|---:|---:|---|"]
            for s in self.suites:
                lines.append(
                    f"| {s['suite']} | `{s.get('file')}` | {s.get('rows')} | "
                    f"{s.get('policy', 'fail')} | {s['evaluated']} | {s['unsuccessful']} | "
                    f"{'ok' if s['success'] else 'FAILED'} |"
                )
            lines.append("")
        if self.results:
            link = (f"[docs]({Path(self.data_docs).resolve().as_uri()})"
                    if self.data_docs else "")
            lines += ["| suite | expectation | column | rule | success | observed value | "
                      "Data Docs |", "|---|---|---|---|---|---|---|"]
            for r in self.results:
                observed = _md_cell(r.get("observed"))
                lines.append(
                    f"| {r['suite']} | `{r['expectation']}` | {r.get('column') or ''} | "
                    f"{r.get('rule') or ''} | {'✅' if r['success'] else '❌'} | {observed} | "
                    f"{link} |")
            lines.append("")
        if self.dropped:
            lines += ["## Dropped rows", ""]
            for dataset, d in self.dropped.items():
                where = f" (kept in `{d['file']}`)" if d.get("file") else ""
                lines.append(f"- {dataset}: {d['rows']} rows ({100 * d['fraction']:.2f}%, max "
                             f"{100 * d['max_invalid_fraction']:.2f}%) failing "
                             f"{', '.join(d['rules'])}{where}")
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
                if f.get("rows"):
                    rows = json.dumps(_json_safe(f["rows"][:3]), ensure_ascii=False)
                    lines.append(f"- rows: `{rows}`")
                lines.append("")
        return "\n".join(lines).rstrip() + "\n"


def _md_cell(value: Any) -> str:
    text = "" if value is None else str(value)
    text = text.replace("|", "\\|").replace("\n", " ")
    return text if len(text) <= 120 else text[:117] + "..."


def suite_parameters(settings: Settings) -> dict[str, Any]:
    """The ``$PARAMETER`` values the suites in ``expectations/`` refer to, from `settings`."""
    params: dict[str, Any] = {
        "rating_min": settings.rating_min,
        "rating_max": settings.rating_max,
        "age_min": settings.age_min,
        "age_max": settings.age_max,
        "interactions_unique_mostly": 1.0 - settings.max_duplicate_interaction_fraction,
    }
    for dataset in DATASETS:
        contract = settings.contract(dataset)
        params[f"{dataset}_min_rows"] = contract.min_rows
        params[f"{dataset}_max_rows"] = contract.max_rows
        params[f"{dataset}_exact_columns"] = contract.extra_columns == "reject"
    return params


def validate_batch(
    batch: Batch,
    *,
    expectations_dir: Path,
    known_user_ids: Iterable[str] | None = None,
    known_item_ids: Iterable[str] | None = None,
    settings: Settings | None = None,
    docs_dir: Path | None = None,
    now: pd.Timestamp | None = None,
    on_chunk: ChunkCallback | None = None,
) -> ValidationReport:
    """Run the three suites of `expectations_dir` on `batch` (raw frames from `read_batch`).

    Interactions may reference users/items of this batch (those not dropped) or the ids in
    `known_user_ids` / `known_item_ids` (ids of earlier batches).

    A table in `Batch.chunked` is validated chunk by chunk (`_validate_chunked`) and its
    results merged into the same report a whole-frame run gives: unexpected counts summed,
    samples from the first chunks, row numbers global, success decided on the totals; row
    count and duplicate keys are evaluated over the whole file. Its rows are handed to
    `on_chunk` as they are validated; ``report.invalid_index`` has no entry for it.

    Args:
        batch: the raw batch.
        expectations_dir: folder of ``users.json``, ``items.json``, ``interactions.json``.
        known_user_ids: user ids already ingested by earlier batches.
        known_item_ids: item ids already ingested by earlier batches.
        settings: contract policies and bounds (`Settings()` when None).
        docs_dir: when given, GE Data Docs for this run are built there.
        now: the clock for the future-timestamp rule (default: the current UTC time).
        on_chunk: for chunked tables, called with each chunk's rows to keep and, under the
            ``drop`` policy, those to drop (see `ChunkCallback`). The verdict on the batch
            comes at the end: a caller writing chunks must discard them if it fails.

    Returns:
        The report; this function never raises on bad data (the caller decides, typically
        quarantine + `recsys.errors.ValidationFailed`, or `split_invalid_rows` under ``drop``).

    Raises:
        FileNotFoundError: a suite file is missing from `expectations_dir`.
        InputFileError: a chunked file turned out unreadable part-way.
        ValueError: the suite of a chunked table holds an expectation that needs the whole
            table at once (see `_chunk_plan`).
    """
    gx = _import_gx()
    started = time.perf_counter()
    settings = settings if settings is not None else Settings()
    expectations_dir = Path(expectations_dir)
    context = gx.get_context(mode="ephemeral")
    _disable_progress_bars(context)
    if docs_dir is not None:
        _add_docs_site(context, Path(docs_dir))
    datasource = context.data_sources.add_or_update_pandas(_DATASOURCE)
    parameters = suite_parameters(settings)
    clock = now if now is not None else pd.Timestamp.now(tz="UTC")
    latest = clock + pd.Timedelta(seconds=settings.future_timestamp_tolerance_s)

    known_extra = {"user_id": known_user_ids, "item_id": known_item_ids}
    report = ValidationReport(success=True)
    for dataset in DATASETS:
        t0 = time.perf_counter()
        contract = settings.contract(dataset)
        drop = contract.policy == "drop"
        suite = _load_suite(gx, context, expectations_dir / f"{dataset}.json")
        raw = batch.frame(dataset)
        known = {}
        if dataset == "interactions":
            known = {
                "user_id": _id_set(_kept(batch.users, report, "users"), "user_id",
                                   known_extra["user_id"]),
                "item_id": _id_set(_kept(batch.items, report, "items"), "item_id",
                                   known_extra["item_id"]),
            }
        result_format: dict[str, Any] = {
            # COMPLETE lists every offending row index, which `drop` needs.
            "result_format": "COMPLETE" if drop else "SUMMARY",
            "partial_unexpected_count": SAMPLE_SIZE,
            "include_unexpected_rows": False,
        }
        file = str(batch.sources.get(dataset, batch.input_dir / dataset))
        chunks = batch.chunked.get(dataset)
        if chunks is not None:
            outcome = _validate_chunked(
                gx, context, datasource, dataset, suite, chunks, raw,
                known={k: pd.Index(list(v), dtype="str") for k, v in known.items()},
                latest=latest, parameters=parameters, result_format=result_format,
                file=file, on_chunk=on_chunk)
            entries, rows, chunked_invalid = outcome.entries, outcome.rows, outcome.invalid_rows
        else:
            frame = _prepare_frame(dataset, raw, known, suite=suite, latest=latest)
            checkpoint = _get_or_create_checkpoint(gx, context, datasource, dataset, suite,
                                                   result_format)
            result = _run_checkpoint(checkpoint, frame, parameters)
            input_columns = list(raw.columns)
            entries = _collect_results(result, suite, dataset, file,
                                       lambda i, f=frame, c=input_columns: _row(f, i, c),
                                       input_columns)
            rows, chunked_invalid = len(frame), None
        report.results.extend(
            {k: e[k] for k in ("suite", "expectation", "rule", "column", "success", "observed")}
            for e in entries)
        failing = [e for e in entries if not e["success"]]
        blocking = failing
        if drop and failing and all(e["row_level"] for e in failing):
            if chunked_invalid is None:
                by_rule = _invalid_by_rule(failing, suite)
                invalid = pd.Index([])
                for index in by_rule.values():
                    invalid = invalid.union(index)
                invalid_rows = len(invalid)
            else:
                invalid_rows = chunked_invalid
            fraction = invalid_rows / rows if rows else 1.0
            if fraction <= contract.max_invalid_fraction:
                if chunked_invalid is None:
                    report.invalid_index[dataset] = invalid
                    report.invalid_by_rule[dataset] = by_rule
                report.dropped[dataset] = {
                    "rows": int(invalid_rows), "fraction": fraction,
                    "max_invalid_fraction": contract.max_invalid_fraction,
                    "rules": [e["rule"] or e["expectation"] for e in failing],
                    "file": None,
                }
                blocking = []
            else:
                blocking = [*failing, _fraction_failure(dataset, file, invalid_rows, rows,
                                                        contract.max_invalid_fraction)]
        report.failures.extend(_public_failure(e) for e in blocking)
        successful = sum(1 for e in entries if e["success"])
        report.suites.append({
            "suite": suite.name,
            "dataset": dataset,
            "file": file,
            "success": not blocking,
            "rows": rows,
            "policy": contract.policy,
            "evaluated": len(entries),
            "successful": successful,
            "unsuccessful": len(entries) - successful,
            "seconds": round(time.perf_counter() - t0, 3),
        })
    report.success = not report.failures
    if docs_dir is not None:
        report.data_docs = _build_docs(context, Path(docs_dir))
    logger.info("validated batch %s in %.2fs: %s (%d failures, dropped %s)", batch.input_dir,
                time.perf_counter() - started, "passed" if report.success else "FAILED",
                len(report.failures),
                {k: v["rows"] for k, v in report.dropped.items()} or "none")
    return report


def split_invalid_rows(batch: Batch, report: ValidationReport
                       ) -> tuple[Batch, dict[str, pd.DataFrame]]:
    """Remove the rows `report` marked for dropping; return the clean batch and those rows.

    Each dropped frame keeps the raw input columns plus ``_failed_rules``: the rules that row
    broke, ``;``-separated.
    """
    dropped: dict[str, pd.DataFrame] = {}
    frames: dict[str, pd.DataFrame] = {}
    for dataset, index in report.invalid_index.items():
        frames[dataset], dropped[dataset] = _set_aside(
            batch.frame(dataset), index, report.invalid_by_rule.get(dataset, {}))
    return replace(batch, **frames), dropped


def _set_aside(frame: pd.DataFrame, index: pd.Index, by_rule: dict[str, pd.Index]
               ) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(rows kept, rows dropped with ``_failed_rules``) of `frame` for the labels `index`."""
    mask = frame.index.isin(index)
    aside = frame.loc[mask].copy()
    rules = pd.Series("", index=aside.index, dtype="object")
    for rule, failed in by_rule.items():
        hit = aside.index.isin(failed)
        rules[hit] = rules[hit] + ";" + rule
    aside["_failed_rules"] = rules.str.lstrip(";")
    return frame.loc[~mask], aside


def _invalid_by_rule(failing: list[dict[str, Any]], suite: Any) -> dict[str, pd.Index]:
    """Offending row labels per rule, rules in the suite's order; one rule may name several
    expectations (``id_not_null`` of two columns): their rows are united."""
    by_rule: dict[str, pd.Index] = {}
    for entry in failing:
        rule = entry["rule"] or entry["expectation"]
        index = pd.Index(entry["index"])
        by_rule[rule] = by_rule[rule].union(index) if rule in by_rule else index
    rank = _rule_rank(suite)
    return dict(sorted(by_rule.items(), key=lambda item: rank.get(item[0], len(rank))))


def _rule_rank(suite: Any) -> dict[str, int]:
    """Each rule's position: that of its first expectation in the suite."""
    rank: dict[str, int] = {}
    for position, expectation in enumerate(suite.expectations):
        rank.setdefault((expectation.meta or {}).get("rule") or expectation.expectation_type,
                        position)
    return rank


def _kept(frame: pd.DataFrame, report: ValidationReport, dataset: str) -> pd.DataFrame:
    index = report.invalid_index.get(dataset)
    return frame if index is None else frame.loc[~frame.index.isin(index)]


def _fraction_failure(dataset: str, file: str, invalid: int, total: int,
                      limit: float) -> dict[str, Any]:
    pct = 100.0 * invalid / total if total else 100.0
    return {
        "dataset": dataset, "file": file, "expectation": "max_invalid_fraction",
        "rule": "invalid_fraction_within_bound", "column": None,
        "observed": f"{invalid} of {total} rows invalid ({pct:.2f}%) > max {100 * limit:.2f}%",
        "sample": [], "rows": [], "kwargs": {"max_invalid_fraction": limit},
        "row_level": False, "index": [], "success": False,
    }


def _public_failure(entry: dict[str, Any]) -> dict[str, Any]:
    keys = ("dataset", "file", "expectation", "rule", "column", "observed", "sample", "rows",
            "kwargs")
    return {k: entry.get(k) for k in keys}


# ---------------------------------------------------------------------------------------------
# Chunked tables
# ---------------------------------------------------------------------------------------------

ChunkCallback = Callable[[str, pd.DataFrame, pd.DataFrame], None]
"""``on_chunk(dataset, kept, dropped)``: one chunk's raw rows to keep, and those to drop with
``_failed_rules`` (``;``-separated), as `split_invalid_rows` splits a whole table; ``dropped``
is empty unless the dataset's policy is ``drop``."""

_ROW_COUNT = "expect_table_row_count_to_be_between"
_COMPOUND_UNIQUE = "expect_compound_columns_to_be_unique"
# Expectations on the table's columns: every chunk has the same, the first chunk's result stands.
_TABLE_SHAPE = {"expect_column_to_exist", _SCHEMA_EXPECTATION,
                "expect_table_columns_to_match_ordered_list", "expect_table_column_count_to_equal",
                "expect_table_column_count_to_be_between"}
# Map expectations whose verdict on a row depends on other rows.
_ACROSS_ROWS = {"expect_column_values_to_be_unique", "expect_column_values_to_be_increasing",
                "expect_column_values_to_be_decreasing"}
_CHUNK_SUITE_SUFFIX = "_chunks"


@dataclass
class _ChunkedOutcome:
    entries: list[dict[str, Any]]
    rows: int
    invalid_rows: int  # under drop: rows failing a row-level rule (0 otherwise)


def _chunk_plan(suite: Any) -> dict[str, str]:
    """How a chunked table meets each expectation of `suite`, by expectation id: ``whole``
    (row count and duplicate keys, evaluated here over the whole file), ``shape`` (columns:
    the first chunk's result stands) or ``rows`` (row by row: run on each chunk, summed).

    Raises:
        ValueError: an expectation needs all rows at once and is none of these (a column's
            uniqueness or order, an aggregate such as a mean).
    """
    from great_expectations.expectations.expectation import (
        ColumnMapExpectation,
        ColumnPairMapExpectation,
        MulticolumnMapExpectation,
    )
    from great_expectations.expectations.registry import get_expectation_impl

    row_wise = (ColumnMapExpectation, ColumnPairMapExpectation, MulticolumnMapExpectation)
    plan: dict[str, str] = {}
    for expectation in suite.expectations:
        kind = expectation.expectation_type
        if kind in (_ROW_COUNT, _COMPOUND_UNIQUE):
            plan[expectation.id] = "whole"
        elif kind in _TABLE_SHAPE:
            plan[expectation.id] = "shape"
        elif kind not in _ACROSS_ROWS and issubclass(get_expectation_impl(kind), row_wise):
            plan[expectation.id] = "rows"
        else:
            raise ValueError(
                f"suite {suite.name!r}: {kind} needs the whole table and cannot be evaluated "
                "chunk by chunk; raise RECSYS_VALIDATE_CHUNK_ROWS above the table's rows")
    return plan


def _validate_chunked(gx: Any, context: Any, datasource: Any, dataset: str, suite: Any,
                      chunks: TableChunks, head: pd.DataFrame, *,
                      known: dict[str, Collection[str]], latest: pd.Timestamp,
                      parameters: dict[str, Any], result_format: dict[str, Any], file: str,
                      on_chunk: ChunkCallback | None) -> _ChunkedOutcome:
    """Validate a table chunk by chunk, with results identical in shape to a whole-frame run.

    1. Duplicate keys: a first pass over the key columns only hashes every row's key
       (`ingest.duplicates`), so each chunk knows which of its rows repeat a key anywhere in
       the file.
    2. Each chunk gets the helper columns and runs the suite's ``shape`` and ``rows``
       expectations (`_chunk_plan`) through one GE checkpoint; counts are summed, samples and
       their rows kept from the first chunks (index labels are the file's row numbers), and
       the chunk's rows go to `on_chunk`, split under ``drop`` as `split_invalid_rows` would.
    3. The merged results, with row count and duplicates over the whole file and success
       decided on the totals (``mostly`` applies to the file), are built as GE results, read
       by `_collect_results` like a whole-frame run's and stored for Data Docs in place of the
       per-chunk results (which are removed as each chunk finishes).
    """
    from great_expectations.core.expectation_validation_result import (
        ExpectationSuiteValidationResult,
    )

    plan = _chunk_plan(suite)
    per_chunk = [e for e in suite.expectations if plan[e.id] != "whole"]
    chunk_suite = context.suites.add(gx.ExpectationSuite(
        name=f"{suite.name}{_CHUNK_SUITE_SUFFIX}", meta=suite.meta,
        expectations=[{k: v for k, v in e.configuration.to_json_dict().items() if k != "id"}
                      for e in per_chunk]))
    main_of = {c.id: m for c, m in zip(chunk_suite.expectations, per_chunk, strict=True)}
    checkpoint = _get_or_create_checkpoint(gx, context, datasource, dataset, chunk_suite,
                                           result_format)
    complete = result_format["result_format"] == "COMPLETE"
    duplicates = _find_duplicates(suite, chunks, head, parameters)
    merged = {e.id: _MergedResult(e) for e in per_chunk}
    rank = _rule_rank(suite)
    sample_rows: dict[Any, dict[str, Any]] = {}
    rows = invalid_rows = 0
    first_run: tuple[Any, Any, Any] | None = None  # first chunk's result key, meta, batch id
    for raw in _chunks_or_head(chunks, head):
        frame = _prepare_frame(dataset, raw, known, suite=suite, latest=latest)
        input_columns = list(raw.columns)
        outcome = checkpoint.run(batch_parameters={"dataframe": frame},
                                 expectation_parameters=parameters)
        ((key, result),) = outcome.run_results.items()
        context.validation_results_store.remove_key(key)  # the merged result replaces it
        if first_run is None:
            first_run = (key, result.meta, result.batch_id)
        by_rule: dict[str, pd.Index] = {}
        sampled: list[Any] = []
        for r in result.results:
            main = main_of[r.expectation_config.id]
            sampled += merged[main.id].add(r)
            res = r.result or {}
            if (complete and res.get("unexpected_index_list")
                    and not _exception_messages(r.exception_info or {})
                    and r.expectation_config.kwargs.get("mostly") in (None, 1, 1.0)):
                _add_rule(by_rule, main, pd.Index(res["unexpected_index_list"]))
        for found in duplicates.values():
            hit = found.add(frame, rows)
            sampled += found.sampled_now
            if complete and found.row_level and hit.any():
                _add_rule(by_rule, found.expectation, frame.index[hit])
        for label in sampled:
            sample_rows.setdefault(label, _row(frame, label, input_columns))
        invalid = pd.Index([])
        for index in by_rule.values():
            invalid = invalid.union(index)
        invalid_rows += len(invalid)
        if on_chunk is not None and len(raw):
            if len(invalid):
                ordered = dict(sorted(by_rule.items(),
                                      key=lambda item: rank.get(item[0], len(rank))))
                kept, dropped = _set_aside(raw, invalid, ordered)
            else:
                kept, dropped = raw, raw.iloc[:0]
            on_chunk(dataset, kept, dropped)
        rows += len(raw)

    assert first_run is not None  # _chunks_or_head yields at least once
    key, meta, batch_id = first_run
    results = []
    for expectation in suite.expectations:
        if expectation.id in merged:
            results.append(merged[expectation.id].result())
        elif expectation.id in duplicates:
            results.append(duplicates[expectation.id].result(rows, parameters, batch_id))
        else:
            results.append(_row_count_result(expectation, rows, parameters, batch_id))
    successful = sum(1 for r in results if r.success)
    suite_result = ExpectationSuiteValidationResult(
        success=successful == len(results), results=results, suite_name=suite.name,
        statistics={"evaluated_expectations": len(results),
                    "successful_expectations": successful,
                    "unsuccessful_expectations": len(results) - successful,
                    "success_percent": 100.0 * successful / len(results) if results else None},
        meta=meta, batch_id=batch_id)
    _store_merged_result(context, suite, suite_result, key)
    context.suites.delete(chunk_suite.name)
    entries = _collect_results(
        suite_result, suite, dataset, file,
        lambda label: sample_rows.get(label) or {"_row": _json_safe(label)},
        list(head.columns), rows_named=complete)
    logger.info("validated %s in chunks of %d rows: %d rows", dataset, chunks.chunk_rows, rows)
    return _ChunkedOutcome(entries=entries, rows=rows, invalid_rows=invalid_rows)


def _chunks_or_head(chunks: TableChunks, head: pd.DataFrame) -> Iterator[pd.DataFrame]:
    """The table's chunks; its empty head when it has no rows, so GE still reports."""
    seen = False
    for chunk in chunks:
        seen = True
        yield chunk
    if not seen:
        yield head


def _add_rule(by_rule: dict[str, pd.Index], expectation: Any, index: pd.Index) -> None:
    rule = (expectation.meta or {}).get("rule") or expectation.expectation_type
    by_rule[rule] = by_rule[rule].union(index) if rule in by_rule else index


def _rendered_config(expectation: Any, parameters: dict[str, Any], batch_id: str | None) -> Any:
    """The expectation's configuration with its ``$PARAMETER`` values filled in, as GE renders
    it into a result (``batch_id`` included)."""
    config = expectation.configuration
    config.process_suite_parameters(suite_parameters=parameters, interactive_evaluation=True,
                                    data_context=None)
    config.kwargs["batch_id"] = batch_id
    return config


def _mostly_success(elements: int, considered: int, unexpected: int, mostly: Any) -> bool:
    """GE's verdict on a map expectation: vacuously true without rows to consider."""
    if elements == 0 or considered == 0:
        return True
    ratio = (float(considered) - float(unexpected)) / float(considered)
    return ratio >= (1.0 if mostly is None else mostly)


def _summary_result(elements: int, missing: int | None, unexpected: int, values: list[Any],
                    indexes: list[Any]) -> dict[str, Any]:
    """A map expectation's result in GE's SUMMARY shape (`_format_map_output`)."""
    from collections import Counter

    total_percent = unexpected / elements * 100 if elements > 0 else None
    considered = elements - missing if missing is not None else elements
    if missing is None:
        percent = total_percent
    else:
        percent = unexpected / considered * 100 if elements > 0 and considered > 0 else None
    result: dict[str, Any] = {"element_count": elements, "unexpected_count": unexpected,
                              "unexpected_percent": percent,
                              "partial_unexpected_list": values[:SAMPLE_SIZE]}
    if missing is not None:
        result.update({"missing_count": missing,
                       "missing_percent": missing / elements * 100 if elements > 0 else None,
                       "unexpected_percent_total": total_percent,
                       "unexpected_percent_nonmissing": percent})
    hashable = [tuple(v.values()) if isinstance(v, dict) else v for v in values[:SAMPLE_SIZE]]
    try:
        result["partial_unexpected_counts"] = [
            {"value": value, "count": count}
            for value, count in sorted(Counter(hashable).most_common(SAMPLE_SIZE),
                                       key=lambda x: (-x[1], x[0]))]
    except TypeError:
        result["partial_unexpected_counts"] = [
            {"error": "partial_exception_counts requires a hashable type"}]
    result["partial_unexpected_index_list"] = indexes[:SAMPLE_SIZE]
    return result


class _MergedResult:
    """One per-chunk expectation's results folded over the chunks. Only counts and samples are
    kept: a chunk's complete lists of offending rows (``drop``) are not held past its turn."""

    def __init__(self, expectation: Any) -> None:
        self.expectation = expectation
        self.config: Any = None  # the first chunk's configuration, as GE rendered it
        # (success, result, exception_info) standing for the file: the first error, or the
        # first chunk's result of an expectation on the columns.
        self.standing: tuple[bool, dict[str, Any], dict[str, Any]] | None = None
        self.errored = False
        self.elements = self.unexpected = 0
        self.missing: int | None = None
        self.values: list[Any] = []
        self.indexes: list[Any] = []

    def add(self, r: Any) -> list[Any]:
        """Fold in one chunk's result; return the row labels it adds to the sample."""
        from great_expectations.expectations.expectation_configuration import (
            ExpectationConfiguration,
        )

        if self.config is None:
            # The chunk suite's configuration under the main suite's id and meta.
            self.config = ExpectationConfiguration(
                type=r.expectation_config.type, kwargs=dict(r.expectation_config.kwargs),
                meta=self.expectation.meta, id=self.expectation.id)
        if self.errored:
            return []
        res = r.result or {}
        exception = dict(r.exception_info or {})
        if _exception_messages(exception):
            self.errored = True
            self.standing = (bool(r.success), res, exception)
            return []
        if "unexpected_count" not in res:
            if self.standing is None:
                self.standing = (bool(r.success), res, exception)
            return []
        self.elements += int(res.get("element_count") or 0)
        self.unexpected += int(res.get("unexpected_count") or 0)
        if "missing_count" in res:
            self.missing = (self.missing or 0) + int(res.get("missing_count") or 0)
        room = SAMPLE_SIZE - len(self.indexes)
        new = list(res.get("partial_unexpected_index_list") or [])[:room]
        self.values += list(res.get("partial_unexpected_list") or [])[:SAMPLE_SIZE
                                                                        - len(self.values)]
        self.indexes += new
        return new

    def result(self) -> Any:
        from great_expectations.core.expectation_validation_result import (
            ExpectationValidationResult,
        )

        if self.standing is not None:
            success, res, exception = self.standing
            return ExpectationValidationResult(success=success, expectation_config=self.config,
                                               result=res, exception_info=exception)
        considered = self.elements - (self.missing or 0)
        return ExpectationValidationResult(
            success=_mostly_success(self.elements, considered, self.unexpected,
                                    self.config.kwargs.get("mostly")),
            expectation_config=self.config,
            result=_summary_result(self.elements, self.missing, self.unexpected, self.values,
                                   self.indexes),
            exception_info={"raised_exception": False, "exception_traceback": None,
                            "exception_message": None})


class _DuplicateKeys:
    """``expect_compound_columns_to_be_unique`` over a whole chunked file: which rows repeat
    a key comes from a first pass (`_find_duplicates`); samples come as the chunks pass."""

    def __init__(self, expectation: Any, columns: list[str], *, duplicated: Any = None,
                 ignored: int = 0, error: str | None = None, mostly: Any = None) -> None:
        self.expectation = expectation
        self.columns = columns
        self.duplicated = duplicated
        self.ignored = ignored
        self.error = error
        self.row_level = error is None and mostly in (None, 1, 1.0)
        self.values: list[Any] = []
        self.indexes: list[Any] = []
        self.sampled_now: list[Any] = []

    def add(self, frame: pd.DataFrame, start: int) -> Any:
        """The chunk's rows (a boolean mask) that repeat a key; samples the first of them."""
        import numpy as np

        self.sampled_now = []
        if self.duplicated is None:
            return np.zeros(len(frame), dtype=bool)
        hit = self.duplicated[start:start + len(frame)]
        room = SAMPLE_SIZE - len(self.indexes)
        if room > 0 and hit.any():
            positions = np.flatnonzero(hit)[:room]
            self.values += frame.iloc[positions][self.columns].to_dict("records")
            self.sampled_now = list(frame.index[positions])
            self.indexes += self.sampled_now
        return hit

    def result(self, rows: int, parameters: dict[str, Any], batch_id: str | None) -> Any:
        from great_expectations.core.expectation_validation_result import (
            ExpectationValidationResult,
        )

        config = _rendered_config(self.expectation, parameters, batch_id)
        if self.error is not None:
            return ExpectationValidationResult(
                success=False, expectation_config=config, result={},
                exception_info={"raised_exception": True, "exception_traceback": None,
                                "exception_message": self.error})
        unexpected = int(self.duplicated.sum())
        return ExpectationValidationResult(
            success=_mostly_success(rows, rows - self.ignored, unexpected,
                                    config.kwargs.get("mostly")),
            expectation_config=config,
            result=_summary_result(rows, self.ignored, unexpected, self.values, self.indexes),
            exception_info={"raised_exception": False, "exception_traceback": None,
                            "exception_message": None})


def _find_duplicates(suite: Any, chunks: TableChunks, head: pd.DataFrame,
                     parameters: dict[str, Any]) -> dict[str, _DuplicateKeys]:
    """One pass over the key columns of every compound-uniqueness expectation of `suite`."""
    from ingest.duplicates import KeyHashes
    from ingest.reader import count_rows

    found: dict[str, _DuplicateKeys] = {}
    hashers: dict[str, KeyHashes] = {}
    mostly: dict[str, Any] = {}
    for expectation in suite.expectations:
        if expectation.expectation_type != _COMPOUND_UNIQUE:
            continue
        kwargs = _rendered_config(expectation, parameters, None).kwargs
        columns = [str(c) for c in kwargs.get("column_list") or []]
        absent = [c for c in columns if c not in head.columns]
        if absent:
            found[expectation.id] = _DuplicateKeys(
                expectation, columns, error=f"columns not found in the table: {absent}")
            continue
        mostly[expectation.id] = kwargs.get("mostly")
        hashers[expectation.id] = KeyHashes(
            columns, capacity=count_rows(chunks.path),
            ignore_row_if=kwargs.get("ignore_row_if") or "all_values_are_missing",
            # CSV chunks may type a column differently (numbers in one, text in another).
            numeric_text=chunks.path.suffix != ".parquet")
    if hashers:
        needed = sorted({c for h in hashers.values() for c in h.columns})
        for chunk in chunks.iter_columns(needed):
            for hasher in hashers.values():
                hasher.add(chunk)
    for expectation_id, hasher in hashers.items():
        expectation = next(e for e in suite.expectations if e.id == expectation_id)
        found[expectation_id] = _DuplicateKeys(
            expectation, hasher.columns, duplicated=hasher.duplicated(),
            ignored=int(hasher.ignored.sum()), mostly=mostly[expectation_id])
    return found


def _row_count_result(expectation: Any, rows: int, parameters: dict[str, Any],
                      batch_id: str | None) -> Any:
    from great_expectations.core.expectation_validation_result import (
        ExpectationValidationResult,
    )

    config = _rendered_config(expectation, parameters, batch_id)
    low, high = config.kwargs.get("min_value"), config.kwargs.get("max_value")
    above = low is None or (rows > low if config.kwargs.get("strict_min") else rows >= low)
    below = high is None or (rows < high if config.kwargs.get("strict_max") else rows <= high)
    return ExpectationValidationResult(
        success=above and below, expectation_config=config, result={"observed_value": rows},
        exception_info={"raised_exception": False, "exception_traceback": None,
                        "exception_message": None})


def _store_merged_result(context: Any, suite: Any, suite_result: Any, chunk_key: Any) -> None:
    """Keep the merged result where Data Docs look for it, under the main suite's name."""
    from great_expectations.data_context.types.resource_identifiers import (
        ExpectationSuiteIdentifier,
        ValidationResultIdentifier,
    )

    suite_id = ExpectationSuiteIdentifier(name=suite.name)
    key = ValidationResultIdentifier(expectation_suite_identifier=suite_id,
                                     run_id=chunk_key.run_id,
                                     batch_identifier=chunk_key.batch_identifier)
    try:
        context.validation_results_store.store_validation_results(
            suite_validation_result=suite_result, suite_validation_result_identifier=key,
            expectation_suite_identifier=suite_id)
    except Exception as error:  # noqa: BLE001 - docs are a view; never fail a run on them
        logger.warning("could not keep the merged %s result for Data Docs: %s", suite.name,
                       error)


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


def _add_docs_site(context: Any, docs_dir: Path) -> None:
    docs_dir.mkdir(parents=True, exist_ok=True)
    context.add_data_docs_site(_DOCS_SITE, {
        "class_name": "SiteBuilder",
        "store_backend": {"class_name": "TupleFilesystemStoreBackend",
                          "base_directory": str(docs_dir.resolve())},
        "site_index_builder": {"class_name": "DefaultSiteIndexBuilder"},
    })


def _build_docs(context: Any, docs_dir: Path) -> str | None:
    try:
        context.build_data_docs(site_names=[_DOCS_SITE])
    except Exception as error:  # noqa: BLE001 - docs are a view; never fail a run on them
        logger.warning("could not build Data Docs in %s: %s", docs_dir, error)
        return None
    index = docs_dir / "index.html"
    return str(index) if index.is_file() else None


def _load_suite(gx: Any, context: Any, path: Path) -> Any:
    if not path.is_file():
        raise FileNotFoundError(f"expectation suite not found: {path}")
    spec = json.loads(path.read_text(encoding="utf-8"))
    suite = gx.ExpectationSuite(
        name=spec["name"],
        expectations=spec.get("expectations", []),
        meta=spec.get("meta"),
    )
    return context.suites.add(suite)  # a fresh ephemeral context: plain adds are enough


def _get_or_create_checkpoint(gx: Any, context: Any, datasource: Any, dataset: str,
                              suite: Any, result_format: dict[str, Any]) -> Any:
    try:
        asset = datasource.get_asset(dataset)
    except LookupError:
        asset = datasource.add_dataframe_asset(name=dataset)
    try:
        batch_definition = asset.get_batch_definition(_BATCH_DEFINITION)
    except (KeyError, LookupError):
        batch_definition = asset.add_batch_definition_whole_dataframe(_BATCH_DEFINITION)
    # Plain adds: the context is new for every run (add_or_update costs ~1 s of diffing).
    definition = context.validation_definitions.add(
        gx.ValidationDefinition(name=f"ingest_{dataset}", data=batch_definition, suite=suite))
    return context.checkpoints.add(
        gx.Checkpoint(name=f"ingest_{dataset}", validation_definitions=[definition],
                      result_format=result_format))


def _run_checkpoint(checkpoint: Any, frame: pd.DataFrame, parameters: dict[str, Any]) -> Any:
    outcome = checkpoint.run(batch_parameters={"dataframe": frame},
                             expectation_parameters=parameters)
    (result,) = outcome.run_results.values()
    return result


# ---------------------------------------------------------------------------------------------
# Frames and results
# ---------------------------------------------------------------------------------------------


def _id_set(frame: pd.DataFrame, column: str, known: Iterable[str] | None) -> set[str]:
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
        if expectation.expectation_type == _SCHEMA_EXPECTATION:
            return [str(c) for c in expectation.column_set or []
                    if not str(c).startswith(HELPER_PREFIX) and str(c) not in required]
    return []


def _prepare_frame(dataset: str, frame: pd.DataFrame, known: dict[str, Collection[str]], *,
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


def _collect_results(result: Any, suite: Any, dataset: str, file: str,
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
        errored = bool(_exception_messages(r.exception_info or {}))
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
    errors = _exception_messages(info)
    if errors:
        return f"could not evaluate: {errors[0]}", [], []
    res = r.result or {}
    if kind == "expect_column_to_exist":
        if r.success:
            return "present", [], []
        return f"column missing (columns: {', '.join(map(str, input_columns))})", [], []
    if kind == _SCHEMA_EXPECTATION:
        mismatched = (res.get("details") or {}).get("mismatched") or {}
        parts = [f"{key} columns: {', '.join(mismatched[key])}"
                 for key in ("unexpected", "missing") if mismatched.get(key)]
        if parts:
            return "; ".join(parts), [], []
        return f"columns: {', '.join(map(str, input_columns))}", [], []
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
                values = list({json.dumps(_json_safe(v), sort_keys=True): v
                               for v in values}.values())
            sample = values[:SAMPLE_SIZE]
        return observed, _json_safe(sample), indexes
    if "observed_value" in res:
        return f"observed value {res['observed_value']!r}", [], []
    return "passed" if r.success else "failed", [], []


def _exception_messages(info: dict[str, Any]) -> list[str]:
    if info.get("raised_exception"):
        return [str(info.get("exception_message"))]
    messages = []
    for value in info.values():
        if isinstance(value, dict) and value.get("raised_exception"):
            messages.append(str(value.get("exception_message")))
    return messages


def _row(frame: pd.DataFrame, index: Any, columns: list[str] | None = None) -> dict[str, Any]:
    """One input row as a JSON-safe dict; ``_row`` is its index label (row number)."""
    try:
        row = frame.loc[index]
    except KeyError:
        return {"_row": _json_safe(index)}
    keep = set(columns) if columns is not None else None
    data: dict[str, Any] = {"_row": _json_safe(index)}
    data.update({str(k): _json_safe(v) for k, v in row.items()
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
