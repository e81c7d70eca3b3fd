"""Backfill: rebuild features and models for a date range with point-in-time (as-of) builds.

For each day from `start` to `end` (every `every_days`), the features use only events at or
before the end of that day (UTC), and a model is trained and registered under
`backfill-<YYYYMMDD>-<token>`. Nothing is served unless `activate=True`, which publishes the
model of the last day through the champion/challenger gate.
"""

from __future__ import annotations

import secrets
from datetime import UTC, date, datetime, time, timedelta
from typing import Any

from prefect import flow, get_run_logger
from prefect.artifacts import create_table_artifact
from prefect.states import Failed, State

from flows.pipeline import features_as_of, train_score_gate_publish
from flows.reporting import report_run_outcome, table_rows
from flows.runner import open_runner
from recsys.errors import DaskClusterError, StageFailed
from recsys.settings import load_settings


def as_of_days(start: date, end: date, every_days: int = 1) -> list[datetime]:
    """End-of-day UTC cut-offs from `start` to `end` inclusive, every `every_days` days."""
    if every_days < 1:
        raise ValueError("every_days must be >= 1")
    if end < start:
        raise ValueError(f"end {end} is before start {start}")
    days = range(0, (end - start).days + 1, every_days)
    return [datetime.combine(start + timedelta(days=d), time.max, tzinfo=UTC) for d in days]


@flow(name="backfill", on_completion=[report_run_outcome],
      on_failure=[report_run_outcome],
      flow_run_name="backfill {start}..{end}")
def backfill(start: date, end: date, every_days: int = 1, search: bool = False,
             activate: bool = False) -> list[dict[str, Any]] | State:
    """Rebuild features and register one model per as-of day in the range.

    Args:
        start: first day (its end, 23:59:59.999999 UTC, is the first cut-off).
        end: last day, inclusive.
        every_days: step between days.
        search: run the hyperparameter search for each model.
        activate: publish the last day's model (through the gate); default registers only.
    """
    settings = load_settings()
    token = secrets.token_hex(3)
    cutoffs = as_of_days(start, end, every_days)
    logger = get_run_logger()
    logger.info("backfill %s..%s: %d as-of build(s), activate=%s", start, end, len(cutoffs),
                activate)
    rows: list[dict[str, Any]] = []
    try:
        with open_runner(settings) as runner:  # one cluster for every day of the range
            logger.info("backfill %s..%s: %s", start, end, runner.description)
            for index, cutoff in enumerate(cutoffs):
                version = f"backfill-{cutoff:%Y%m%d}-{token}"
                manifest_file = features_as_of(cutoff.isoformat(), version, settings,
                                               mapper=runner.mapper)
                result = train_score_gate_publish(
                    manifest_file, version, settings, search=search,
                    publish=activate and index == len(cutoffs) - 1, run_id=version,
                    mapper=runner.mapper, runner=runner.description)
                als = result.metrics.get("als", {}) if isinstance(result.metrics, dict) else {}
                rows.append({"as_of": cutoff.isoformat(), "version": result.version,
                             "published": result.published,
                             **{k: round(v, 4) for k, v in als.items()
                                if isinstance(v, float)}})
    except (StageFailed, DaskClusterError) as failure:
        done = f" after {len(rows)} of {len(cutoffs)} day(s)" if rows else ""
        return Failed(message=f"{failure}{done}")
    finally:
        if rows:
            create_table_artifact(key="backfill-models", table=table_rows(rows),
                                  description=f"Models registered for {start}..{end}")
    return rows
