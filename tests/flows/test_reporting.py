"""What runs show people (issue 16): tidy artifact tables, one-line messages, run names, run
logs without engine noise, and the CLI's tables and log format."""

from __future__ import annotations

import logging
import sys
from datetime import UTC, datetime
from pathlib import Path

import pytest
from prefect.exceptions import FailedRun

from flows.reporting import (
    MAX_LOG_CHARS,
    RunLogFilter,
    as_of_label,
    markdown_table,
    one_line,
    round_significant,
    table_rows,
)
from flows.tasks import (
    features_run_name,
    gate_run_name,
    publish_run_name,
    score_run_name,
    train_run_name,
)
from recsys.cli import RunLogFormatter, _metrics_table, _timings_table
from recsys.errors import ValidationFailed


@pytest.mark.parametrize(("value", "expected"), [
    (1.128460490000009, 1.128), (0.4250836823317159, 0.4251), (0.000123456, 0.0001235),
    (1234.567, 1235), (123456.7, 123500), (-2.71828, -2.718), (0.0, 0.0), (3.0, 3.0)])
def test_numbers_keep_four_significant_digits(value: float, expected: float) -> None:
    rounded = round_significant(value)
    assert rounded == expected and type(rounded) is type(expected)


def test_markdown_table_flattens_rounds_and_escapes() -> None:
    table = markdown_table({
        "version": "v1", "counts": {"users": 1436, "items": 200},
        "dropped_versions": ["v0", "old"], "skipped": None, "written": True,
        "challenger_metric": 1.128460490000009, "fit_all_s": 0.123456,
        "reason": "a | b <script>\nnext line", "trials": [{"k": 1, "ndcg": 0.5}, {"k": 2}],
    })
    lines = table.splitlines()
    assert lines[:2] == ["| field | value |", "|---|---|"]
    rows = dict(line.strip("| ").split(" | ", 1) for line in lines[2:])
    assert rows["counts.users"] == "1436" and rows["counts.items"] == "200"
    assert rows["dropped_versions"] == "v0, old"
    assert rows["skipped"] == "—" and rows["written"] == "True"
    assert rows["challenger_metric"] == "1.128"
    assert rows["fit_all (seconds)"] == "0.1235"  # units in the name, not in a suffix
    assert rows["reason"] == r"a \| b &lt;script&gt; next line"  # one cell, escaped
    assert rows["trials"] == "k=1, ndcg=0.5; k=2"
    assert not any(c in table for c in "{}'"), "no Python reprs"


def test_table_rows_are_flat_and_rounded() -> None:
    rows = table_rows([{"model": "als", "ndcg@10": 0.4250836823317159, "users": 192,
                        "timings": {"fit_s": 0.61234}, "tags": ["a", "b"]}])
    assert rows == [{"model": "als", "ndcg@10": 0.4251, "users": 192,
                     "timings.fit (seconds)": 0.6123, "tags": "a, b"}]


def test_validation_failure_is_one_line() -> None:
    error = ValidationFailed(
        [{"file": "b/interactions.csv", "column": "rating", "rule": "rating_in_range",
          "expectation": "x", "observed": "1 of 11 rows unexpected", "sample": [42.0]},
         {"file": "b/users.csv", "column": "age", "rule": "age_in_range", "expectation": "y"}],
        quarantine_dir=Path("/data/quarantine/run-1"))
    assert "\n" in str(error)
    line = one_line(error)
    assert line == ("2 expectation(s) failed: b/interactions.csv, column 'rating', rule "
                    "'rating_in_range': 1 of 11 rows unexpected e.g. [42.0]; b/users.csv, "
                    "column 'age', rule 'age_in_range'; batch quarantined in "
                    "/data/quarantine/run-1")


def test_one_line_is_bounded_and_keeps_the_end() -> None:
    line = one_line("start " + "x" * 5000 + " quarantined in /q", limit=300)
    assert len(line) <= 300 and line.startswith("start ") and line.endswith("quarantined in /q")
    assert "characters left out" in line


def test_run_names_say_what_runs_do() -> None:
    assert features_run_name({"as_of": None, "snapshot_id": "run-1"}) == \
        "build features run-1 (all events)"
    day_end = datetime(2024, 1, 7, 23, 59, 59, 999999, tzinfo=UTC).isoformat()
    assert features_run_name({"as_of": day_end, "snapshot_id": "bf-1"}) == \
        "build features bf-1 (as of 2024-01-07)"
    assert as_of_label("2024-01-07T12:30:00+00:00") == "as of 2024-01-07T12:30+00:00"
    assert train_run_name({"version": "v1"}) == "train model v1"
    assert train_run_name({"version": "v1", "search": True}) == "train model v1 with search"
    model = {"model_dir": Path("/data/models/v1")}
    assert score_run_name(model) == "score model v1"
    assert gate_run_name(model) == "gate model v1 against the champion"
    assert publish_run_name(model) == "publish model v1"


def _record(message: str, level: int = logging.INFO, exc: BaseException | None = None,
            no_exception: bool = False) -> logging.LogRecord:
    exc_info = (type(exc), exc, None) if exc else (None, None, None) if no_exception else None
    return logging.LogRecord("prefect.task_runs", level, __file__, 1, message, None, exc_info)


def test_run_log_filter_keeps_one_tidy_line() -> None:
    keep = RunLogFilter().filter
    # Prefect's "failed with state" error (with exc_info=True and no exception) is dropped:
    # "Finished in state Failed(...)" follows with the same message
    assert not keep(_record("Task run failed with state: Failed(message='x')", logging.ERROR,
                            no_exception=True))
    # the engine's FailedRun traceback after our own Failed state is dropped
    assert not keep(_record("Engine execution exited with unexpected exception",
                            logging.ERROR, exc=FailedRun("Run failed.")))
    # our errors: one line, no traceback; nothing left to print as "NoneType: None"
    record = _record("Task run failed with exception: PublishError('x')", logging.ERROR,
                     exc=ValidationFailed([]))
    assert keep(record) and record.exc_info is None
    record = _record("Finished", no_exception=True)
    assert keep(record) and record.exc_info is None
    # a bug keeps its traceback
    record = _record("Encountered exception", logging.ERROR, exc=ValueError("bug"))
    assert keep(record) and record.exc_info is not None
    # a flood becomes one bounded line
    record = _record("summary: " + "x" * 30_000 + "\nsecond line")
    assert keep(record)
    assert len(record.getMessage()) < MAX_LOG_CHARS + 40 and "\n" not in record.getMessage()
    assert record.getMessage().endswith("more characters]")


def test_metrics_table_prints_counts_as_integers() -> None:
    table = _metrics_table({"als": {"ndcg@10": 0.42508, "users": 1436},
                            "popular": {"ndcg@10": 0.2325, "users": 1436},
                            "k": 10, "timings": {"fit_train_s": 0.5}})
    header, als, popular = table.splitlines()
    assert header.split() == ["model", "ndcg@10", "users"]
    assert als.split() == ["als", "0.4251", "1436"]
    assert popular.split() == ["popular", "0.2325", "1436"]
    assert "1436.0" not in table


def test_timings_table() -> None:
    lines = _timings_table({"validate": 12.34, "features": 1.0, "train": 0.26}).splitlines()
    assert [line.split() for line in lines] == [
        ["stage", "seconds"], ["validate", "12.3"], ["features", "1.0"], ["train", "0.3"],
        ["total", "13.6"]]


def test_cli_log_format_names_the_task() -> None:
    formatter = RunLogFormatter("%(levelname)s %(source)s: %(message)s")
    record = logging.LogRecord("prefect.task_runs", logging.INFO, __file__, 1,
                               "Finished in state Completed()", None, None)
    record.task_run_name = "train model v1"
    record.flow_run_name = "pipeline /in"
    assert formatter.format(record) == "INFO task 'train model v1': Finished in state Completed()"
    record = logging.LogRecord("prefect.flow_runs", logging.INFO, __file__, 1, "done", None,
                               None)
    record.flow_run_name = "pipeline /in"
    assert formatter.format(record) == "INFO flow 'pipeline /in': done"
    record = logging.LogRecord("training.model", logging.INFO, __file__, 1, "fit", None, None)
    assert formatter.format(record) == "INFO training.model: fit"


def test_cli_log_handler_follows_stderr(monkeypatch: pytest.MonkeyPatch) -> None:
    """Rich swaps sys.stderr while it draws bars; the CLI's handler must write to the swap."""
    import io

    from recsys.cli import StderrHandler

    handler = StderrHandler()
    swapped = io.StringIO()
    monkeypatch.setattr(sys, "stderr", swapped)
    handler.emit(logging.LogRecord("x", logging.INFO, __file__, 1, "hello", None, None))
    assert swapped.getvalue() == "hello\n"
