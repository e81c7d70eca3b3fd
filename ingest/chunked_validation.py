"""Validate a table too large to hold whole, chunk by chunk, into the report a whole run gives.

A table in `Batch.chunked` (interactions above ``Settings.validate_chunk_rows``) is split into
chunk files, each validated by one part (`ingest.validation_part.validate_part`) run through a
`recsys.partitions.Mapper`: one after another here (`serial_map`), or in parallel on Dask
workers or a process pool. `chunk_plan` says how each expectation of the suite is met. The
parts' results are merged (`ingest.merged_results`) and read by
`ingest.ge_results.collect_results` as a whole-table run's would be; row count and duplicate
keys are evaluated over the whole file. Each chunk's kept and dropped rows, written by its part,
are handed on in file order (`ChunkCallback`), so a caller can write the batch without holding
it.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Collection, Iterator
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from ingest.drop_policy import rule_rank
from ingest.ge_results import SCHEMA_EXPECTATION, collect_results
from ingest.merged_results import (
    COMPOUND_UNIQUE,
    DuplicateFinder,
    MergedResult,
    row_count_result,
)
from ingest.reader import TableChunks
from ingest.report import json_safe
from ingest.validation_part import validate_part
from recsys.partitions import Mapper, serial_map
from recsys.progress import ProgressCallback, report_progress

logger = logging.getLogger(__name__)

ChunkCallback = Callable[[str, Path | None, Path | None], None]
"""``on_chunk(dataset, kept, dropped)``: one chunk's files, in file order: its rows to keep,
normalized (an uncompressed Arrow IPC file, `pyarrow.feather`; None when it keeps none), and
those to drop with ``_failed_rules`` (``;``-separated), as read and as `split_invalid_rows`
splits a whole table (CSV without header for a CSV input, else parquet; None unless the
dataset's policy is ``drop`` and rows failed)."""

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


def validate_chunked(context: Any, dataset: str, suite: Any, chunks: TableChunks,
                     head: pd.DataFrame, *, known: dict[str, Collection[str]],
                     latest: pd.Timestamp, parameters: dict[str, Any],
                     result_format: dict[str, Any], file: str, on_chunk: ChunkCallback | None,
                     scratch: Path, mapper: Mapper = serial_map,
                     progress: ProgressCallback | None = None) -> ChunkedOutcome:
    """Validate a table chunk by chunk, with results identical in shape to a whole-frame run.

    1. One pass over the file writes each chunk to `scratch` (a pickle: dtypes and row
       numbers exactly as read) and hashes its key columns (`DuplicateFinder`), so every
       chunk can know which of its rows repeat a key anywhere in the file.
    2. The chunks are validated through `mapper`, one part each
       (`ingest.validation_part.validate_part`: the suite's ``shape`` and ``rows``
       expectations, `chunk_plan`), possibly in parallel in other processes; each part
       writes its kept and dropped rows beside its chunk.
    3. The parts' results are merged in file order: counts summed, samples and their rows
       kept from the first chunks (index labels are the file's row numbers), row count and
       duplicates over the whole file, success decided on the totals (``mostly`` applies to
       the file). They are built as GE results, read by `collect_results` like a whole-frame
       run's and stored in `context` for Data Docs. Each chunk's files go to `on_chunk`.

    `progress` is called once per merged chunk (step ``validate <dataset>``, rows validated
    so far, `chunks.rows`), and once more with the real count when that differs from
    `chunks.rows`.
    """
    from great_expectations.core.expectation_validation_result import (
        ExpectationSuiteValidationResult,
    )

    plan = chunk_plan(suite)
    per_chunk = [e for e in suite.expectations if plan[e.id] != "whole"]
    suite_json = json.dumps({
        "name": f"{suite.name}{_CHUNK_SUITE_SUFFIX}", "meta": suite.meta,
        "expectations": [{k: v for k, v in e.configuration.to_json_dict().items() if k != "id"}
                         for e in per_chunk]})
    scratch.mkdir(parents=True, exist_ok=True)
    finder = DuplicateFinder(suite, head, parameters, capacity=chunks.rows or 0,
                             numeric_text=chunks.path.suffix != ".parquet")
    chunk_files: list[Path] = []
    starts: list[int] = []
    rows = 0
    for raw in _chunks_or_head(chunks, head):
        finder.add(raw)
        chunk_files.append(scratch / f"{dataset}-{len(chunk_files):05d}.pkl")
        raw.to_pickle(chunk_files[-1])
        starts.append(rows)
        rows += len(raw)
    duplicates = finder.finish()
    rank = rule_rank(suite)
    duplicate_specs = []
    for expectation_id, found in duplicates.items():
        if found.duplicated is None:
            continue
        mask = scratch / f"{dataset}-duplicates-{len(duplicate_specs)}.npy"
        np.save(mask, found.duplicated)
        duplicate_specs.append({"rule": _rule(found.expectation), "columns": found.columns,
                                "mask": str(mask), "row_level": found.row_level,
                                "id": expectation_id})
    known_dir = scratch / f"{dataset}-known"
    known_dir.mkdir(exist_ok=True)
    for column, ids in known.items():
        pq.write_table(pa.table({"id": pa.array(list(ids), pa.string())}),
                       known_dir / f"{column}.parquet")
    shared = (dataset, suite_json, json.dumps(json_safe(parameters)),
              json.dumps(result_format), latest.isoformat(), str(known_dir),
              json.dumps([{k: v for k, v in d.items() if k != "id"} for d in duplicate_specs]),
              json.dumps(rank))
    csv = chunks.path.suffix != ".parquet"
    outcomes = mapper(f"validate {dataset}", validate_part,
                      [(str(path), *shared, start, csv)
                       for path, start in zip(chunk_files, starts, strict=True)])

    merged = {e.id: MergedResult(e) for e in per_chunk}
    sample_rows: dict[Any, dict[str, Any]] = {}
    done = invalid_rows = 0
    for outcome in outcomes:
        found_rows = dict((label, row) for label, row in outcome["rows_by_label"])
        sampled: list[Any] = []
        for expectation, r in zip(per_chunk, outcome["results"], strict=True):
            sampled += merged[expectation.id].add(_result(r))
        for spec, found in zip(duplicate_specs, outcome["duplicates"], strict=True):
            sampled += duplicates[spec["id"]].take_sample(found["values"], found["labels"])
        for label in sampled:
            sample_rows.setdefault(label, found_rows.get(label) or {"_row": json_safe(label)})
        invalid_rows += outcome["invalid_rows"]
        if on_chunk is not None and outcome["rows"]:
            on_chunk(dataset, _path(outcome["kept"]), _path(outcome["dropped"]))
        done += outcome["rows"]
        report_progress(progress, f"validate {dataset}", done, chunks.rows)
    if done != chunks.rows:  # a CSV count is an upper bound: end the step at the real count
        report_progress(progress, f"validate {dataset}", done, done)

    run = outcomes[0]["run"]
    results = []
    for expectation in suite.expectations:
        if expectation.id in merged:
            results.append(merged[expectation.id].result())
        elif expectation.id in duplicates:
            results.append(duplicates[expectation.id].result(done, parameters, run["batch_id"]))
        else:
            results.append(row_count_result(expectation, done, parameters, run["batch_id"]))
    successful = sum(1 for r in results if r.success)
    suite_result = ExpectationSuiteValidationResult(
        success=successful == len(results), results=results, suite_name=suite.name,
        statistics={"evaluated_expectations": len(results),
                    "successful_expectations": successful,
                    "unsuccessful_expectations": len(results) - successful,
                    "success_percent": 100.0 * successful / len(results) if results else None},
        meta=run["meta"], batch_id=run["batch_id"])
    _store_merged_result(context, suite, suite_result, run)
    entries = collect_results(
        suite_result, suite, dataset, file,
        lambda label: sample_rows.get(label) or {"_row": json_safe(label)},
        list(head.columns), rows_named=_complete_format(result_format))
    logger.info("validated %s in %d chunks of %d rows: %d rows", dataset, len(chunk_files),
                chunks.chunk_rows, done)
    return ChunkedOutcome(entries=entries, rows=done, invalid_rows=invalid_rows)


def _complete_format(result_format: dict[str, Any]) -> bool:
    """Whether `result_format` lists every offending row (what the ``drop`` policy needs)."""
    return result_format["result_format"] == "COMPLETE"


def _result(part: dict[str, Any]) -> Any:
    """A part's result of one expectation, shaped as `MergedResult.add` reads a GE result."""
    config = SimpleNamespace(type=part["type"], kwargs=part["kwargs"])
    return SimpleNamespace(expectation_config=config, success=part["success"],
                           result=part["result"], exception_info=part["exception_info"])


def _path(value: str | None) -> Path | None:
    return None if value is None else Path(value)


def _rule(expectation: Any) -> str:
    return (expectation.meta or {}).get("rule") or expectation.expectation_type


def _chunks_or_head(chunks: TableChunks, head: pd.DataFrame) -> Iterator[pd.DataFrame]:
    """The table's chunks; its empty head when it has no rows, so GE still reports."""
    seen = False
    for chunk in chunks:
        seen = True
        yield chunk
    if not seen:
        yield head


def _store_merged_result(context: Any, suite: Any, suite_result: Any,
                         run: dict[str, Any]) -> None:
    """Keep the merged result where Data Docs look for it, under the main suite's name."""
    from great_expectations.core.run_identifier import RunIdentifier
    from great_expectations.data_context.types.resource_identifiers import (
        ExpectationSuiteIdentifier,
        ValidationResultIdentifier,
    )

    suite_id = ExpectationSuiteIdentifier(name=suite.name)
    key = ValidationResultIdentifier(expectation_suite_identifier=suite_id,
                                     run_id=RunIdentifier(**run["run_id"]),
                                     batch_identifier=run["batch_identifier"])
    try:
        context.validation_results_store.store_validation_results(
            suite_validation_result=suite_result, suite_validation_result_identifier=key,
            expectation_suite_identifier=suite_id)
    except Exception as error:  # noqa: BLE001 - docs are a view; never fail a run on them
        logger.warning("could not keep the merged %s result for Data Docs: %s", suite.name,
                       error)
