"""The validation report of one batch: its model, its JSON and Markdown forms, and its files.

`ingest.validate.validate_batch` fills a `ValidationReport`; `write_reports` keeps it as
``report.json`` and ``report.md`` in the run's validation folder
(``<data_dir>/validation/<run id>/``), and quarantine stores it beside a rejected batch.
Values from the batch are untrusted: both forms shorten them, and the Markdown escapes them
(`ingest.sanitize`), so a value can neither flood a report nor inject markup into it.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from ingest.reader import DATASETS
from ingest.sanitize import md_code, md_text, short_value
from recsys.errors import InputFileError


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
        """JSON-safe dict (``json.dumps`` works on it as is), every text value shortened."""
        return short_value(json_safe({"success": self.success, "failures": self.failures,
                                      "suites": self.suites, "results": self.results,
                                      "dropped": self.dropped, "data_docs": self.data_docs}),
                           limit=2000)

    def to_markdown(self) -> str:
        """The human report, also the flow's Prefect artifact.

        Verdict, a link to the run's Data Docs, a per-suite summary, a table of every
        expectation (suite, expectation, column, success, observed value), dropped rows, and
        one section per blocking failure with sample rows.
        """
        lines = [f"# Batch validation: {'PASSED' if self.success else 'FAILED'}", ""]
        if self.data_docs:
            lines += [f"Great Expectations Data Docs: [{md_text(self.data_docs, 2000)}]"
                      f"({Path(self.data_docs).resolve().as_uri()})", ""]
        if self.suites:
            lines += ["| suite | file | rows | policy | evaluated | failed | result |",
                      "|---|---|---:|---|---:|---:|---|"]
            for s in self.suites:
                lines.append(
                    f"| {md_text(s['suite'])} | {md_text(s.get('file'), 2000)} | "
                    f"{s.get('rows')} | {md_text(s.get('policy', 'fail'))} | {s['evaluated']} | "
                    f"{s['unsuccessful']} | {'ok' if s['success'] else 'FAILED'} |"
                )
            lines.append("")
        if self.results:
            link = (f"[docs]({Path(self.data_docs).resolve().as_uri()})"
                    if self.data_docs else "")
            lines += ["| suite | expectation | column | rule | success | observed value | "
                      "Data Docs |", "|---|---|---|---|---|---|---|"]
            for r in self.results:
                lines.append(
                    f"| {md_text(r['suite'])} | {md_code(r['expectation'])} | "
                    f"{md_text(r.get('column'))} | {md_text(r.get('rule'))} | "
                    f"{'✅' if r['success'] else '❌'} | {md_text(r.get('observed'), 120)} | "
                    f"{link} |")
            lines.append("")
        if self.dropped:
            lines += ["## Dropped rows", ""]
            for dataset, d in self.dropped.items():
                where = f" (kept in {md_text(d['file'], 2000)})" if d.get("file") else ""
                lines.append(f"- {md_text(dataset)}: {d['rows']} rows ({100 * d['fraction']:.2f}%,"
                             f" max {100 * d['max_invalid_fraction']:.2f}%) failing "
                             f"{md_text(', '.join(d['rules']))}{where}")
            lines.append("")
        if self.failures:
            lines += [f"## Failures ({len(self.failures)})", ""]
            for i, f in enumerate(self.failures, 1):
                col = f" column {md_code(f['column'])}" if f.get("column") else ""
                lines.append(f"### {i}. {md_text(f['dataset'])}:{col} "
                             f"{md_text(f.get('rule') or f['expectation'])}")
                lines.append("")
                lines.append(f"- file: {md_text(f.get('file'), 2000)}")
                lines.append(f"- expectation: {md_code(f['expectation'])}")
                if f.get("observed") is not None:
                    lines.append(f"- observed: {md_text(f['observed'], 2000)}")
                if f.get("sample"):
                    sample = json.dumps(short_value(json_safe(f["sample"])), ensure_ascii=False)
                    lines.append(f"- sample: {md_text(sample, 4000)}")
                if f.get("rows"):
                    rows = json.dumps(short_value(json_safe(f["rows"][:3])), ensure_ascii=False)
                    lines.append(f"- rows: {md_text(rows, 4000)}")
                lines.append("")
        return "\n".join(lines).rstrip() + "\n"


def json_safe(value: Any) -> Any:
    """Turn numpy/pandas scalars, NaN/NaT and containers into plain JSON values."""
    if isinstance(value, dict):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple | set):
        return [json_safe(v) for v in value]
    if isinstance(value, pd.Timestamp):
        return None if pd.isna(value) else value.isoformat()
    if hasattr(value, "tolist") and not isinstance(value, str):  # numpy arrays and scalars
        return json_safe(value.tolist())
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



def write_reports(run_dir: Path, report: ValidationReport) -> None:
    """Write ``report.json`` and ``report.md`` of `report` into `run_dir` (created if needed)."""
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "report.json").write_text(
        json.dumps(report.to_dict(), indent=2, ensure_ascii=False), encoding="utf-8")
    (run_dir / "report.md").write_text(report.to_markdown(), encoding="utf-8")
