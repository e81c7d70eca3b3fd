"""One part of a table validated chunk by chunk: the function a mapper runs, in any process.

`validate_part` takes one chunk file written by `ingest.chunked_validation` (paths and plain
values only, so a Dask worker or a process pool can run it), runs the chunk suite on it through
GE, splits its rows under ``drop``, writes the rows to keep (normalized, as an uncompressed
Arrow IPC file: a scratch file, read once by `ingest.writer.ChunkWriter`) and those
to drop (as read, in the input's format) beside the chunk file, and returns a small summary:
GE's per-expectation results without their complete row lists, the sampled rows, and counts.
Running it again on the same chunk rewrites the same files (idempotent, as a retried Dask task
needs). Each process keeps one GE context per chunk suite (`_checkpoint`), so a worker running
many parts builds it once.
"""

from __future__ import annotations

import json
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow.feather as feather
import pyarrow.parquet as pq

from ingest.drop_policy import set_aside
from ingest.ge_context import get_or_create_checkpoint, import_gx, new_context
from ingest.ge_results import SAMPLE_SIZE, exception_messages, row_dict
from ingest.helper_columns import prepare_frame
from ingest.normalize import normalize_frame
from ingest.writer import arrow_table, dropped_table

# Result keys that list every offending row of a chunk: used here, never returned.
_COMPLETE_KEYS = ("unexpected_list", "unexpected_index_list")


def validate_part(chunk_file: str, dataset: str, suite_json: str, parameters_json: str,
                  result_format_json: str, latest: str, known_dir: str | None,
                  duplicates_json: str, rank_json: str, start: int,
                  csv_dropped: bool) -> dict[str, Any]:
    """Validate one chunk; write its kept and dropped rows next to `chunk_file`.

    Args:
        chunk_file: the chunk, pickled by pandas (dtypes and row numbers exactly as read).
        dataset: the table (``interactions``).
        suite_json: the chunk suite, ``{"name", "meta", "expectations": [config]}``.
        parameters_json: the suite's ``$PARAMETER`` values.
        result_format_json: GE's result format; ``COMPLETE`` means the ``drop`` policy.
        latest: ISO-8601 instant after which a timestamp is in the future.
        known_dir: folder of ``<column>.parquet`` files of known ids (one column ``id``).
        duplicates_json: ``[{"rule", "columns", "mask", "row_level"}]``: per duplicate-key
            expectation the ``.npy`` mask over the whole file of rows repeating a key.
        rank_json: each rule's position in the main suite (the order of ``_failed_rules``).
        start: the chunk's first row in the file (the mask's offset).
        csv_dropped: write dropped rows as CSV (the input was CSV), else parquet.

    Returns:
        ``rows``, ``invalid_rows``, ``results`` (``type``, ``kwargs``, ``success``,
        ``result``, ``exception_info`` per chunk-suite expectation, in order),
        ``duplicates`` (per duplicate expectation: sampled ``values`` and ``labels``),
        ``rows_by_label`` ([label, row] pairs of every sampled row), ``kept`` and
        ``dropped`` (file paths or None), ``run`` (GE's ``run_id``, ``batch_id``, ``meta``).
    """
    raw = pd.read_pickle(chunk_file)
    result_format = json.loads(result_format_json)
    complete = result_format["result_format"] == "COMPLETE"
    known = _known_ids(known_dir) if known_dir else {}
    context, checkpoint, suite = _checkpoint(suite_json, result_format_json)
    frame = prepare_frame(dataset, raw, known, suite=suite, latest=pd.Timestamp(latest))
    input_columns = list(raw.columns)
    outcome = checkpoint.run(batch_parameters={"dataframe": frame},
                             expectation_parameters=json.loads(parameters_json))
    ((key, result),) = outcome.run_results.items()
    context.validation_results_store.remove_key(key)  # the parent stores the merged result

    by_rule: dict[str, pd.Index] = {}
    sampled: list[Any] = []
    results = []
    by_id = {r.expectation_config.id: r for r in result.results}  # GE's order is its own
    for expectation in suite.expectations:
        r = by_id[expectation.id]
        res = dict(r.result or {})
        exception = dict(r.exception_info or {})
        if (complete and res.get("unexpected_index_list") and not exception_messages(exception)
                and r.expectation_config.kwargs.get("mostly") in (None, 1, 1.0)):
            _add_rule(by_rule, _rule(expectation), pd.Index(res["unexpected_index_list"]))
        sampled += list(res.get("partial_unexpected_index_list") or [])[:SAMPLE_SIZE]
        results.append({"type": r.expectation_config.type,
                        "kwargs": dict(r.expectation_config.kwargs), "success": bool(r.success),
                        "result": {k: v for k, v in res.items() if k not in _COMPLETE_KEYS},
                        "exception_info": exception})
    duplicates = []
    for spec in json.loads(duplicates_json):
        hit = np.asarray(np.load(spec["mask"], mmap_mode="r")[start:start + len(frame)])
        positions = np.flatnonzero(hit)[:SAMPLE_SIZE]
        labels = list(frame.index[positions])
        duplicates.append({"values": frame.iloc[positions][spec["columns"]].to_dict("records"),
                           "labels": labels})
        sampled += labels
        if complete and spec["row_level"] and hit.any():
            _add_rule(by_rule, spec["rule"], frame.index[hit])

    invalid = pd.Index([])
    for index in by_rule.values():
        invalid = invalid.union(index)
    kept_file = dropped_file = None
    if len(raw):
        if len(invalid):
            rank = json.loads(rank_json)
            ordered = dict(sorted(by_rule.items(),
                                  key=lambda item: rank.get(item[0], len(rank))))
            kept, dropped = set_aside(raw, invalid, ordered)
        else:
            kept, dropped = raw, raw.iloc[:0]
        stem = Path(chunk_file).with_suffix("")
        if len(kept):
            kept_file = str(stem) + ".kept.arrow"
            feather.write_feather(arrow_table(dataset, normalize_frame(dataset, kept)),
                                  kept_file, compression="uncompressed")
        if len(dropped):
            if csv_dropped:
                dropped_file = str(stem) + ".dropped.csv"
                dropped.to_csv(dropped_file, index=False, header=False)
            else:
                dropped_file = str(stem) + ".dropped.parquet"
                pq.write_table(dropped_table(dropped), dropped_file)
    meta = {k: v for k, v in dict(result.meta).items() if k != "batch_parameters"}
    if isinstance(meta.get("batch_spec"), dict):  # never ship the chunk back
        meta["batch_spec"] = {k: v for k, v in meta["batch_spec"].items()
                              if k != "batch_data"}
    return {
        "rows": len(raw),
        "invalid_rows": len(invalid),
        "results": results,
        "duplicates": duplicates,
        "rows_by_label": [[label, row_dict(frame, label, input_columns)]
                          for label in dict.fromkeys(sampled)],
        "kept": kept_file,
        "dropped": dropped_file,
        "run": {"run_id": key.run_id.to_json_dict(), "batch_identifier": key.batch_identifier,
                "batch_id": result.batch_id, "meta": meta},
    }


def _rule(expectation: Any) -> str:
    return (expectation.meta or {}).get("rule") or expectation.expectation_type


def _add_rule(by_rule: dict[str, pd.Index], rule: str, index: pd.Index) -> None:
    by_rule[rule] = by_rule[rule].union(index) if rule in by_rule else index


@lru_cache(maxsize=4)
def _checkpoint(suite_json: str, result_format_json: str) -> tuple[Any, Any, Any]:
    """This process's GE context, checkpoint and suite for one chunk suite (built once)."""
    gx = import_gx()
    spec = json.loads(suite_json)
    context, datasource = new_context(gx, None)
    suite = context.suites.add(gx.ExpectationSuite(
        name=spec["name"], meta=spec.get("meta"), expectations=spec["expectations"]))
    checkpoint = get_or_create_checkpoint(gx, context, datasource, "part", suite,
                                          json.loads(result_format_json))
    return context, checkpoint, suite


def _known_ids(known_dir: str) -> dict[str, pd.Index]:
    """The known ids per id column, read once per process (and again when the files change:
    a rerun of the same run id writes them anew)."""
    files = sorted(Path(known_dir).glob("*.parquet"))
    return _read_known(tuple((str(p), p.stat().st_mtime_ns, p.stat().st_size) for p in files))


@lru_cache(maxsize=1)
def _read_known(files: tuple[tuple[str, int, int], ...]) -> dict[str, pd.Index]:
    return {Path(path).stem: pd.Index(pq.read_table(path).column("id").to_pylist(), dtype="str")
            for path, _, _ in files}
