"""Validate a batch against its data contract with Great Expectations 1.x.

The contract lives in reviewable suite files, ``expectations/{users,items,interactions}.json``
(GE's ExpectationSuite JSON: ``name``, ``expectations: [{type, kwargs, meta}]``). Bounds that
operators tune (row counts, rating and age ranges, the duplicate bound, schema strictness) are
``{"$PARAMETER": name}`` values filled from `recsys.settings.Settings` by `suite_parameters`.

Each run builds an ephemeral GE context in code (`ingest.ge_context`) and runs each table
through a checkpoint with an explicit result format, so every failure carries a sample of
offending values and rows (`ingest.ge_results`). With a ``docs_dir`` the run also builds GE
Data Docs there.

Per-dataset policy (`recsys.settings.DatasetContract`, applied by `ingest.drop_policy`):
``fail`` rejects the batch on any failed expectation; ``drop`` removes rows failing row-level
expectations unless they exceed ``max_invalid_fraction`` or a table-level expectation fails.
Users and items are validated first, so interactions are checked against the users and items
that survive.

Checks that GE cannot express on the raw column (timestamp parseability, numeric rating/weight/
age, references) run on helper columns added to a *copy* of the frame
(`ingest.helper_columns`). A table too large to hold whole (`Batch.chunked`) is validated chunk
by chunk (`ingest.chunked_validation`) into the same report.
"""

from __future__ import annotations

import logging
import tempfile
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pandas as pd

from ingest.chunked_validation import ChunkCallback, validate_chunked
from ingest.drop_policy import apply_policy, kept_rows, public_failure
from ingest.ge_context import (
    build_docs,
    get_or_create_checkpoint,
    import_gx,
    load_suite,
    new_context,
    run_checkpoint,
)
from ingest.ge_results import SAMPLE_SIZE, collect_results, row_dict
from ingest.helper_columns import id_set, prepare_frame
from ingest.reader import DATASETS, Batch
from ingest.report import ValidationReport
from ingest.sql_validation import run_sql_checkpoint
from recsys.partitions import Mapper, serial_map
from recsys.progress import ProgressCallback, report_progress
from recsys.settings import Settings

logger = logging.getLogger(__name__)


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
    settings: Settings,
    known_user_ids: Iterable[str] | None = None,
    known_item_ids: Iterable[str] | None = None,
    docs_dir: Path | None = None,
    now: pd.Timestamp | None = None,
    on_chunk: ChunkCallback | None = None,
    progress: ProgressCallback | None = None,
    scratch_dir: Path | None = None,
    mapper: Mapper = serial_map,
) -> ValidationReport:
    """Run the three suites of `expectations_dir` on `batch` (raw frames from `read_batch`).

    Interactions may reference users/items of this batch (those not dropped) or the ids in
    `known_user_ids` / `known_item_ids` (ids of earlier batches).

    A table in `Batch.chunked` is validated chunk by chunk (`validate_chunked`: one part per
    chunk, run through `mapper`) and its results merged into the same report a whole-frame run
    gives: unexpected counts summed, samples from the first chunks, row numbers global, success
    decided on the totals; row count and duplicate keys are evaluated over the whole file. The
    files its parts write (kept rows normalized, dropped rows as read) are handed to
    `on_chunk` in file order; ``report.invalid_index`` has no entry for it.

    Args:
        batch: the raw batch.
        expectations_dir: folder of ``users.json``, ``items.json``, ``interactions.json``.
        settings: contract policies and bounds, the future-timestamp tolerance.
        known_user_ids: user ids already ingested by earlier batches.
        known_item_ids: item ids already ingested by earlier batches.
        docs_dir: when given, GE Data Docs for this run are built there.
        now: the clock for the future-timestamp rule (default: the current UTC time).
        on_chunk: for chunked tables, called with each chunk's files of rows to keep and,
            under the ``drop`` policy, of rows to drop (see `ChunkCallback`). The verdict on
            the batch comes at the end: a caller writing chunks must discard them if it fails.
        progress: told the rows validated per dataset (step ``validate <dataset>``): once per
            chunk of a chunked table, once when a whole table is done.
        scratch_dir: where a chunked table's chunk files and their parts' outputs are written
            (the files handed to `on_chunk` live there); default: a temporary folder, removed
            before returning.
        mapper: runs the parts of a chunked table, one per chunk
            (`ingest.validation_part.validate_part`), e.g. in parallel on Dask workers.

    Returns:
        The report; this function never raises on bad data (the caller decides, typically
        quarantine + `recsys.errors.ValidationFailed`, or `split_invalid_rows` under ``drop``).

    Raises:
        FileNotFoundError: a suite file is missing from `expectations_dir`.
        InputFileError: a chunked file turned out unreadable part-way.
        ValueError: the suite of a chunked table holds an expectation that needs the whole
            table at once (see `ingest.chunked_validation.chunk_plan`).
    """
    gx = import_gx()
    started = time.perf_counter()
    expectations_dir = Path(expectations_dir)
    context, datasource = new_context(gx, docs_dir)
    parameters = suite_parameters(settings)
    clock = now if now is not None else pd.Timestamp.now(tz="UTC")
    latest = clock + pd.Timedelta(seconds=settings.future_timestamp_tolerance_s)

    known_extra = {"user_id": known_user_ids, "item_id": known_item_ids}
    report = ValidationReport(success=True)
    for dataset in DATASETS:
        t0 = time.perf_counter()
        contract = settings.contract(dataset)
        suite = load_suite(gx, context, expectations_dir / f"{dataset}.json")
        raw = batch.frame(dataset)
        known = {}
        if dataset == "interactions":
            known = {
                "user_id": id_set(kept_rows(batch.users, report, "users"), "user_id",
                                  known_extra["user_id"]),
                "item_id": id_set(kept_rows(batch.items, report, "items"), "item_id",
                                  known_extra["item_id"]),
            }
        result_format: dict[str, Any] = {
            # COMPLETE lists every offending row index, which `drop` needs.
            "result_format": "COMPLETE" if contract.policy == "drop" else "SUMMARY",
            "partial_unexpected_count": SAMPLE_SIZE,
            "include_unexpected_rows": False,
        }
        file = str(batch.sources.get(dataset, batch.input_dir / dataset))
        chunks = batch.chunked.get(dataset)
        if chunks is not None:
            with _scratch(scratch_dir) as scratch:
                outcome = validate_chunked(
                    context, dataset, suite, chunks, raw, known=known, latest=latest,
                    parameters=parameters, result_format=result_format, file=file,
                    on_chunk=on_chunk, scratch=scratch / "chunks", mapper=mapper,
                    progress=progress)
            entries, rows, chunked_invalid = outcome.entries, outcome.rows, outcome.invalid_rows
        else:
            frame = prepare_frame(dataset, raw, known, suite=suite, latest=latest)
            if settings.validation_engine == "duckdb":
                result = run_sql_checkpoint(gx, context, dataset, suite, frame, parameters,
                                            result_format)
            else:
                checkpoint = get_or_create_checkpoint(gx, context, datasource, dataset, suite,
                                                      result_format)
                result = run_checkpoint(checkpoint, frame, parameters)
            input_columns = list(raw.columns)
            entries = collect_results(result, suite, dataset, file,
                                      lambda i, f=frame, c=input_columns: row_dict(f, i, c),
                                      input_columns)
            rows, chunked_invalid = len(frame), None
            report_progress(progress, f"validate {dataset}", rows, rows)
        report.results.extend(
            {k: e[k] for k in ("suite", "expectation", "rule", "column", "success", "observed")}
            for e in entries)
        blocking = apply_policy(report, dataset, file, suite, contract, entries, rows=rows,
                                chunked_invalid=chunked_invalid)
        report.failures.extend(public_failure(e) for e in blocking)
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
        report.data_docs = build_docs(context, Path(docs_dir))
    logger.info("validated batch %s in %.2fs: %s (%d failures, dropped %s)", batch.input_dir,
                time.perf_counter() - started, "passed" if report.success else "FAILED",
                len(report.failures),
                {k: v["rows"] for k, v in report.dropped.items()} or "none")
    return report


@contextmanager
def _scratch(folder: Path | None) -> Iterator[Path]:
    """`folder`, or a temporary folder removed on exit."""
    if folder is not None:
        yield Path(folder)
        return
    with tempfile.TemporaryDirectory(prefix="recsys-validate-") as tmp:
        yield Path(tmp)
