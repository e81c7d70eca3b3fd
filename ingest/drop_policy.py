"""The ``drop`` policy: which failed rows a dataset may lose, and setting them aside.

Under ``drop`` (`recsys.settings.DatasetContract`), rows failing row-level expectations are
removed, unless they exceed ``max_invalid_fraction`` or a table-level expectation (row count,
schema, duplicate bound with a tolerated share) fails; ``fail`` rejects the batch on any failed
expectation. `apply_policy` decides per dataset; `split_invalid_rows` then removes the rows and
returns them with the rules they broke.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pandas as pd

from ingest.reader import Batch
from ingest.report import ValidationReport
from recsys.settings import DatasetContract

def split_invalid_rows(batch: Batch, report: ValidationReport
                       ) -> tuple[Batch, dict[str, pd.DataFrame]]:
    """Remove the rows `report` marked for dropping; return the clean batch and those rows.

    Each dropped frame keeps the raw input columns plus ``_failed_rules``: the rules that row
    broke, ``;``-separated.
    """
    dropped: dict[str, pd.DataFrame] = {}
    frames: dict[str, pd.DataFrame] = {}
    for dataset, index in report.invalid_index.items():
        frames[dataset], dropped[dataset] = set_aside(
            batch.frame(dataset), index, report.invalid_by_rule.get(dataset, {}))
    return replace(batch, **frames), dropped


def set_aside(frame: pd.DataFrame, index: pd.Index, by_rule: dict[str, pd.Index]
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


def invalid_by_rule(failing: list[dict[str, Any]], suite: Any) -> dict[str, pd.Index]:
    """Offending row labels per rule, rules in the suite's order; one rule may name several
    expectations (``id_not_null`` of two columns): their rows are united."""
    by_rule: dict[str, pd.Index] = {}
    for entry in failing:
        rule = entry["rule"] or entry["expectation"]
        index = pd.Index(entry["index"])
        by_rule[rule] = by_rule[rule].union(index) if rule in by_rule else index
    rank = rule_rank(suite)
    return dict(sorted(by_rule.items(), key=lambda item: rank.get(item[0], len(rank))))


def rule_rank(suite: Any) -> dict[str, int]:
    """Each rule's position: that of its first expectation in the suite."""
    rank: dict[str, int] = {}
    for position, expectation in enumerate(suite.expectations):
        rank.setdefault((expectation.meta or {}).get("rule") or expectation.expectation_type,
                        position)
    return rank


def kept_rows(frame: pd.DataFrame, report: ValidationReport, dataset: str) -> pd.DataFrame:
    """The rows of `frame` that `report` does not drop (all of them for a chunked table)."""
    index = report.invalid_index.get(dataset)
    return frame if index is None else frame.loc[~frame.index.isin(index)]


def fraction_failure(dataset: str, file: str, invalid: int, total: int,
                     limit: float) -> dict[str, Any]:
    """The failure entry of a dataset whose invalid rows exceed ``max_invalid_fraction``."""
    pct = 100.0 * invalid / total if total else 100.0
    return {
        "dataset": dataset, "file": file, "expectation": "max_invalid_fraction",
        "rule": "invalid_fraction_within_bound", "column": None,
        "observed": f"{invalid} of {total} rows invalid ({pct:.2f}%) > max {100 * limit:.2f}%",
        "sample": [], "rows": [], "kwargs": {"max_invalid_fraction": limit},
        "row_level": False, "index": [], "success": False,
    }


def public_failure(entry: dict[str, Any]) -> dict[str, Any]:
    """A failure entry as the report shows it (without the row-level bookkeeping)."""
    keys = ("dataset", "file", "expectation", "rule", "column", "observed", "sample", "rows",
            "kwargs")
    return {k: entry.get(k) for k in keys}


def apply_policy(report: ValidationReport, dataset: str, file: str, suite: Any,
                 contract: DatasetContract, entries: list[dict[str, Any]], *, rows: int,
                 chunked_invalid: int | None) -> list[dict[str, Any]]:
    """Decide what the failed expectations of one dataset mean for the batch.

    Under ``drop``, when every failure is row-level and the failing rows are within
    ``max_invalid_fraction``, the rows are marked for dropping in `report` (``dropped``, and
    for a whole table ``invalid_index`` / ``invalid_by_rule``) and nothing blocks; above the
    bound, a ``max_invalid_fraction`` failure is added.

    Args:
        report: the report being filled (updated in place).
        dataset, file: the table and its input file.
        suite: its GE suite (the order of its rules).
        contract: the dataset's policy.
        entries: the expectation entries of the dataset (`ingest.ge_results.collect_results`).
        rows: rows in the table.
        chunked_invalid: for a chunked table, the rows failing a row-level rule (counted as
            the chunks passed); None for a whole table (the rows come from `entries`).

    Returns:
        The blocking failures (entries), empty when the dataset passes.
    """
    failing = [e for e in entries if not e["success"]]
    if contract.policy != "drop" or not failing or not all(e["row_level"] for e in failing):
        return failing
    if chunked_invalid is None:
        by_rule = invalid_by_rule(failing, suite)
        invalid = pd.Index([])
        for index in by_rule.values():
            invalid = invalid.union(index)
        invalid_rows = len(invalid)
    else:
        invalid_rows = chunked_invalid
    fraction = invalid_rows / rows if rows else 1.0
    if fraction > contract.max_invalid_fraction:
        return [*failing, fraction_failure(dataset, file, invalid_rows, rows,
                                           contract.max_invalid_fraction)]
    if chunked_invalid is None:
        report.invalid_index[dataset] = invalid
        report.invalid_by_rule[dataset] = by_rule
    report.dropped[dataset] = {
        "rows": int(invalid_rows), "fraction": fraction,
        "max_invalid_fraction": contract.max_invalid_fraction,
        "rules": [e["rule"] or e["expectation"] for e in failing],
        "file": None,
    }
    return []
