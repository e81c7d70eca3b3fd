"""Validate a table too large to hold whole, chunk by chunk, into the report a whole run gives.

A table in `Batch.chunked` (interactions above ``Settings.validate_chunk_rows``) is run through
one GE checkpoint per chunk; `chunk_plan` says how each expectation of its suite is met. The
per-chunk results are merged (`ingest.merged_results`) and read by
`ingest.ge_results.collect_results` as a whole-table run's would be; row count and duplicate
keys are evaluated over the whole file. Each chunk's rows are handed on as they are validated
(`ChunkCallback`), so a caller can write the batch without holding it.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Collection, Iterator
from dataclasses import dataclass
from typing import Any

import pandas as pd

from ingest.drop_policy import rule_rank, set_aside
from ingest.ge_context import get_or_create_checkpoint
from ingest.ge_results import SCHEMA_EXPECTATION, collect_results, exception_messages, row_dict
from ingest.helper_columns import prepare_frame
from ingest.merged_results import (
    COMPOUND_UNIQUE,
    MergedResult,
    find_duplicates,
    row_count_result,
)
from ingest.reader import TableChunks
from ingest.report import json_safe
from recsys.progress import ProgressCallback, report_progress

logger = logging.getLogger(__name__)

ChunkCallback = Callable[[str, pd.DataFrame, pd.DataFrame], None]
"""``on_chunk(dataset, kept, dropped)``: one chunk's raw rows to keep, and those to drop with
``_failed_rules`` (``;``-separated), as `split_invalid_rows` splits a whole table; ``dropped``
is empty unless the dataset's policy is ``drop``."""

_ROW_COUNT = "expect_table_row_count_to_be_between"
# Expectations on the table's columns: every chunk has the same, the first chunk's result stands.
_TABLE_SHAPE = {"expect_column_to_exist", SCHEMA_EXPECTATION,
                "expect_table_columns_to_match_ordered_list", "expect_table_column_count_to_equal",
                "expect_table_column_count_to_be_between"}
# Map expectations whose verdict on a row depends on other rows.
_ACROSS_ROWS = {"expect_column_values_to_be_unique", "expect_column_values_to_be_increasing",
                "expect_column_values_to_be_decreasing"}
_CHUNK_SUITE_SUFFIX = "_chunks"


@dataclass
class ChunkedOutcome:
    """What `validate_chunked` found in one table."""

    entries: list[dict[str, Any]]
    rows: int
    invalid_rows: int  # under drop: rows failing a row-level rule (0 otherwise)


def chunk_plan(suite: Any) -> dict[str, str]:
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
        if kind in (_ROW_COUNT, COMPOUND_UNIQUE):
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


def validate_chunked(gx: Any, context: Any, datasource: Any, dataset: str, suite: Any,
                     chunks: TableChunks, head: pd.DataFrame, *,
                     known: dict[str, Collection[str]], latest: pd.Timestamp,
                     parameters: dict[str, Any], result_format: dict[str, Any], file: str,
                     on_chunk: ChunkCallback | None,
                     progress: ProgressCallback | None = None) -> ChunkedOutcome:
    """Validate a table chunk by chunk, with results identical in shape to a whole-frame run.

    1. Duplicate keys: a first pass over the key columns only hashes every row's key
       (`ingest.duplicates`), so each chunk knows which of its rows repeat a key anywhere in
       the file.
    2. Each chunk gets the helper columns and runs the suite's ``shape`` and ``rows``
       expectations (`chunk_plan`) through one GE checkpoint; counts are summed, samples and
       their rows kept from the first chunks (index labels are the file's row numbers), and
       the chunk's rows go to `on_chunk`, split under ``drop`` as `split_invalid_rows` would.
    3. The merged results, with row count and duplicates over the whole file and success
       decided on the totals (``mostly`` applies to the file), are built as GE results, read
       by `collect_results` like a whole-frame run's and stored for Data Docs in place of the
       per-chunk results (which are removed as each chunk finishes).

    `progress` is called once per chunk (step ``validate <dataset>``, rows validated so far,
    `chunks.rows`), and once more with the real count when that differs from `chunks.rows`.
    """
    from great_expectations.core.expectation_validation_result import (
        ExpectationSuiteValidationResult,
    )

    plan = chunk_plan(suite)
    per_chunk = [e for e in suite.expectations if plan[e.id] != "whole"]
    chunk_suite = context.suites.add(gx.ExpectationSuite(
        name=f"{suite.name}{_CHUNK_SUITE_SUFFIX}", meta=suite.meta,
        expectations=[{k: v for k, v in e.configuration.to_json_dict().items() if k != "id"}
                      for e in per_chunk]))
    main_of = {c.id: m for c, m in zip(chunk_suite.expectations, per_chunk, strict=True)}
    checkpoint = get_or_create_checkpoint(gx, context, datasource, dataset, chunk_suite,
                                          result_format)
    complete = result_format["result_format"] == "COMPLETE"
    duplicates = find_duplicates(suite, chunks, head, parameters)
    merged = {e.id: MergedResult(e) for e in per_chunk}
    rank = rule_rank(suite)
    sample_rows: dict[Any, dict[str, Any]] = {}
    rows = invalid_rows = 0
    first_run: tuple[Any, Any, Any] | None = None  # first chunk's result key, meta, batch id
    for raw in _chunks_or_head(chunks, head):
        frame = prepare_frame(dataset, raw, known, suite=suite, latest=latest)
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
                    and not exception_messages(r.exception_info or {})
                    and r.expectation_config.kwargs.get("mostly") in (None, 1, 1.0)):
                _add_rule(by_rule, main, pd.Index(res["unexpected_index_list"]))
        for found in duplicates.values():
            hit = found.add(frame, rows)
            sampled += found.sampled_now
            if complete and found.row_level and hit.any():
                _add_rule(by_rule, found.expectation, frame.index[hit])
        for label in sampled:
            sample_rows.setdefault(label, row_dict(frame, label, input_columns))
        invalid = pd.Index([])
        for index in by_rule.values():
            invalid = invalid.union(index)
        invalid_rows += len(invalid)
        if on_chunk is not None and len(raw):
            if len(invalid):
                ordered = dict(sorted(by_rule.items(),
                                      key=lambda item: rank.get(item[0], len(rank))))
                kept, dropped = set_aside(raw, invalid, ordered)
            else:
                kept, dropped = raw, raw.iloc[:0]
            on_chunk(dataset, kept, dropped)
        rows += len(raw)
        report_progress(progress, f"validate {dataset}", rows, chunks.rows)

    assert first_run is not None  # _chunks_or_head yields at least once
    if rows != chunks.rows:  # a CSV count is an upper bound: end the step at the real count
        report_progress(progress, f"validate {dataset}", rows, rows)
    key, meta, batch_id = first_run
    results = []
    for expectation in suite.expectations:
        if expectation.id in merged:
            results.append(merged[expectation.id].result())
        elif expectation.id in duplicates:
            results.append(duplicates[expectation.id].result(rows, parameters, batch_id))
        else:
            results.append(row_count_result(expectation, rows, parameters, batch_id))
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
    entries = collect_results(
        suite_result, suite, dataset, file,
        lambda label: sample_rows.get(label) or {"_row": json_safe(label)},
        list(head.columns), rows_named=complete)
    logger.info("validated %s in chunks of %d rows: %d rows", dataset, chunks.chunk_rows, rows)
    return ChunkedOutcome(entries=entries, rows=rows, invalid_rows=invalid_rows)


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
