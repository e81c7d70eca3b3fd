"""What flows show outside themselves: artifact tables and the Pushgateway run outcome."""

from __future__ import annotations

import logging
from typing import Any

from prometheus_client import CollectorRegistry, Gauge, pushadd_to_gateway

from recsys.settings import load_settings

log = logging.getLogger(__name__)


def markdown_table(rows: dict[str, Any]) -> str:
    """A two-column markdown table of `rows` for an artifact."""
    return "\n".join(["| field | value |", "|---|---|",
                      *(f"| {key} | {value} |" for key, value in rows.items())])


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
