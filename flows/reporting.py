"""What flows show outside themselves: artifact tables, one-line messages, tidy run logs, and the
Pushgateway run outcome.

Artifacts (`markdown_table`, `table_rows`): numbers rounded to `SIGNIFICANT_DIGITS` significant
digits, units in the column names (a ``_s`` suffix reads ``(seconds)``), nested values flattened
into ``parent.child`` rows, lists and mappings inside a cell as ``key=value`` text, never a Python
repr; markdown cells escaped with `ingest.sanitize.md_text` (values may come from a batch).

State messages (`one_line`): the project's errors can span lines (a failed data contract lists
each expectation); Prefect shows a state message as one line and its logs print its repr, so a
message is joined into one line (``; `` between lines) and bounded.

Run logs (`RunLogFilter`, installed on Prefect's run loggers when this module is imported, so in
every process that runs our flows): the project's own errors are logged once, as one line,
without a traceback; a run that ends in our Failed state does not add the engine's ``FailedRun``
traceback; no line is longer than `MAX_LOG_CHARS`.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterable, Mapping
from datetime import datetime
from typing import Any

from prefect.exceptions import FailedRun
from prometheus_client import CollectorRegistry, Gauge, pushadd_to_gateway

from ingest.sanitize import md_text, short_text
from recsys.errors import RecsysError
from recsys.settings import load_settings

log = logging.getLogger(__name__)

SIGNIFICANT_DIGITS = 4
MAX_LOG_CHARS = 500
"""The longest run log line (Prefect UI and terminal); longer ones are cut and say so."""
MAX_STATE_MESSAGE_CHARS = 1000
"""The longest state message; the middle of a longer one is left out (its end often names where
the batch went)."""
RUN_LOGGERS = ("prefect.flow_runs", "prefect.task_runs")
_UNITS = {"_s": "seconds", "_ms": "milliseconds", "_bytes": "bytes", "_gb": "GB"}
_EMPTY = "—"


# --------------------------------------------------------------------------- values and tables

def round_significant(value: float, digits: int = SIGNIFICANT_DIGITS) -> float | int:
    """`value` rounded to `digits` significant digits (an int when no decimals are left);
    0, inf and nan as they are."""
    if value == 0 or not math.isfinite(value):
        return value
    decimals = digits - 1 - math.floor(math.log10(abs(value)))
    rounded = round(value, decimals)
    return int(rounded) if decimals <= 0 else rounded


def tidy_value(value: Any) -> Any:
    """A value fit for a table cell: numbers rounded (ints and booleans as they are), None as a
    dash, lists and mappings as text (`cell_text`), anything else as short text."""
    if isinstance(value, bool | int):
        return value
    if isinstance(value, float):
        return round_significant(value)
    if value is None:
        return _EMPTY
    if isinstance(value, datetime):
        return value.isoformat(timespec="seconds")
    if isinstance(value, Mapping | list | tuple | set | frozenset):
        return cell_text(value)
    return short_text(" ".join(str(value).split()))


def cell_text(value: Any) -> str:
    """`value` as one line of text: a mapping as ``key=value, ...``, a list as ``a, b``, numbers
    rounded; never a Python repr of a container."""
    if isinstance(value, Mapping):
        return ", ".join(f"{key}={cell_text(item)}" for key, item in value.items()) or _EMPTY
    if isinstance(value, list | tuple | set | frozenset):
        items = sorted(value, key=str) if isinstance(value, set | frozenset) else value
        # items that are mappings are separated with ';' so their own ',' stays readable
        sep = "; " if any(isinstance(item, Mapping) for item in items) else ", "
        return sep.join(cell_text(item) for item in items) or _EMPTY
    return str(tidy_value(value))


def field_label(key: str) -> str:
    """A column or field name with its unit spelled out: ``fit_train_s`` -> ``fit_train
    (seconds)``."""
    for suffix, unit in _UNITS.items():
        if key.endswith(suffix) and len(key) > len(suffix):
            return f"{key[:-len(suffix)]} ({unit})"
    return key


def flat_fields(fields: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested mappings flattened into ``parent.child`` keys (labels with units), values tidied
    (`tidy_value`); lists stay one field, as text."""
    flat: dict[str, Any] = {}
    for key, value in fields.items():
        name = f"{prefix}{field_label(str(key))}"
        if isinstance(value, Mapping) and value:
            flat.update(flat_fields(value, f"{name}."))
        else:
            flat[name] = tidy_value(value)
    return flat


def markdown_table(fields: Mapping[str, Any]) -> str:
    """A two-column markdown table (field, value) of `fields`, flattened (`flat_fields`),
    every cell escaped."""
    return "\n".join(["| field | value |", "|---|---|",
                      *(f"| {md_text(key)} | {md_text(value)} |"
                        for key, value in flat_fields(fields).items())])


def table_rows(rows: Iterable[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Rows for a Prefect table artifact: each row flattened and tidied (`flat_fields`)."""
    return [flat_fields(row) for row in rows]


def one_line(text: Any, limit: int | None = MAX_STATE_MESSAGE_CHARS) -> str:
    """`text` as one line: lines joined with ``; `` (after a line ending in ``:`` with a
    space), list bullets dropped; longer than `limit`, its middle is left out and says so."""
    line = ""
    for part in str(text).splitlines():
        part = part.strip().removeprefix("- ").strip()
        if part:
            line = part if not line else f"{line}{' ' if line.endswith(':') else '; '}{part}"
    if limit is not None and len(line) > limit:
        room = len(f" ... [{len(line)} characters left out] ... ")  # the marker, at most
        cut = len(line) - limit + room
        head = (limit - room) * 2 // 3
        line = f"{line[:head]} ... [{cut} characters left out] ... {line[head + cut:]}"
    return line


def shorten_log(text: str, limit: int = MAX_LOG_CHARS) -> str:
    """A log message cut to `limit` characters, saying how much was left out."""
    if len(text) <= limit:
        return text
    return f"{text[:limit]} ... [{len(text) - limit} more characters]"


def as_of_label(as_of: str | datetime | None) -> str:
    """How a feature cut-off reads in names: ``all events``, ``as of 2024-01-07`` for the end
    of a day (a backfill's cut-offs), else ``as of 2024-01-07T12:00+00:00``."""
    if as_of is None or as_of == "":
        return "all events"
    try:
        cut = as_of if isinstance(as_of, datetime) else datetime.fromisoformat(str(as_of))
    except ValueError:  # the flow refuses it with a message of its own
        return f"as of {short_text(as_of, 40)}"
    if (cut.hour, cut.minute, cut.second) == (23, 59, 59):
        return f"as of {cut.date().isoformat()}"
    return f"as of {cut.isoformat(timespec='minutes')}"


# --------------------------------------------------------------------------- run logs

class RunLogFilter(logging.Filter):
    """Keeps Prefect's run logs to one tidy line per event (see the module docstring).

    - a record with ``exc_info=True`` but no exception loses it (no ``NoneType: None`` line);
    - a record whose exception is one of the project's errors keeps its one-line message and
      loses the traceback;
    - the engine's ``FailedRun`` record after a run that returned our Failed state is dropped
      (the ``Finished in state Failed(...)`` line already says why), and so is the task
      engine's "Task run failed with state" error that precedes the same ``Finished`` line;
    - a message with line breaks is joined into one line, one over `MAX_LOG_CHARS` is cut.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        error = record.exc_info[1] if record.exc_info else None
        if isinstance(error, FailedRun):
            return False
        if record.exc_info and (error is None or isinstance(error, RecsysError)):
            record.exc_info, record.exc_text = None, None
        message = record.getMessage()
        if record.levelno >= logging.ERROR and message.startswith("Task run failed with state:"):
            return False
        if len(message) > MAX_LOG_CHARS or "\n" in message:
            record.msg, record.args = shorten_log(one_line(message, limit=None)), None
        return True


def install_run_log_filter() -> None:
    """Put one `RunLogFilter` on each of Prefect's run loggers (idempotent). Logger filters
    survive Prefect's own logging setup, which replaces handlers only."""
    for name in RUN_LOGGERS:
        logger = logging.getLogger(name)
        if not any(isinstance(f, RunLogFilter) for f in logger.filters):
            logger.addFilter(RunLogFilter())


# The engine logs a run's end after the flow function has returned, in whatever process imported
# the flow (the CLI, a worker's flow-run process): installing on import covers them all.
install_run_log_filter()


# --------------------------------------------------------------------------- Pushgateway

def report_run_outcome(flow: Any, flow_run: Any, state: Any) -> None:
    """Flow state hook: push the run's outcome to the Prometheus Pushgateway, when configured.

    Gauges per flow (grouping key `job=recsys_pipeline, flow=<name>`):
    `recsys_pipeline_last_run_timestamp_seconds`, `recsys_pipeline_last_run_duration_seconds`,
    `recsys_pipeline_last_run_success` (1/0) and, on success,
    `recsys_pipeline_last_success_timestamp_seconds`. A push failure is logged, never raised.
    """
    settings = load_settings()
    if not settings.pushgateway_url:
        return
    registry = CollectorRegistry()
    labels = {"flow": flow.name}
    now = state.timestamp.timestamp() if state.timestamp else None
    started = flow_run.start_time.timestamp() if flow_run.start_time else now
    success = bool(state.is_completed())
    Gauge("recsys_pipeline_last_run_timestamp_seconds", "End of the last run",
          registry=registry).set(now or 0)
    Gauge("recsys_pipeline_last_run_duration_seconds", "Duration of the last run",
          registry=registry).set((now or 0) - (started or 0))
    Gauge("recsys_pipeline_last_run_success", "1 if the last run completed, else 0",
          registry=registry).set(1 if success else 0)
    if success:
        Gauge("recsys_pipeline_last_success_timestamp_seconds", "End of the last successful run",
              registry=registry).set(now or 0)
    try:
        pushadd_to_gateway(settings.pushgateway_url, job="recsys_pipeline",
                           grouping_key=labels, registry=registry, timeout=5)
    except OSError as error:
        log.warning("could not push run outcome to %s: %s", settings.pushgateway_url, error)
