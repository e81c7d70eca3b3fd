"""Maintenance: back up MongoDB, prune old snapshots/models/backups/logs, check health.

A recipe of three tasks (`flows/tasks.py`); the run fails (naming the stage) when the backup fails
or the health check finds a problem, so the UI shows it in red. Pruning composes the owners'
retention rules (`flows/housekeeping.py`).
"""

from __future__ import annotations

from typing import Any

from prefect import flow
from prefect.states import Failed, State

from flows.reporting import report_run_outcome
from flows.tasks import backup_mongodb, health_check, prune_data, run_stage
from recsys.errors import StageFailed
from recsys.settings import load_settings


@flow(name="maintenance", on_completion=[report_run_outcome],
      on_failure=[report_run_outcome],
      flow_run_name="maintenance")
def maintenance(backup: bool = True, prune: bool = True, keep_snapshots: int | None = None,
                keep_models: int | None = None, keep_backups: int = 7, log_days: float = 14,
                api_url: str | None = None, prefect_url: str | None = None,
                min_free_gb: float = 1.0) -> dict[str, Any] | State:
    """Back up, prune, then check health; Failed (naming the stage) if one fails.

    Args:
        backup: back up the serving database first.
        prune: apply the retention rules afterwards (only after a successful backup).
        keep_snapshots / keep_models / keep_backups: how many of each to keep (newest); None
            for snapshots and models means the settings `feature_keep_snapshots` and
            `keep_models`. Models MongoDB still lists, and the snapshots of kept models, are
            always kept.
        log_days: age in days after which logs and Prefect results are deleted.
        api_url / prefect_url: also check these services when given.
        min_free_gb: free disk required under the data dir.
    """
    settings = load_settings()
    out: dict[str, Any] = {}
    try:
        if backup:
            out["backup"] = run_stage("backup", backup_mongodb, settings)
        if prune:
            removed = run_stage("prune", prune_data, settings, keep_snapshots, keep_models,
                                keep_backups, log_days)
            out["pruned"] = {kind: len(items) for kind, items in removed.items()}
        out["health"] = report = run_stage("health", health_check, settings, api_url,
                                           prefect_url, min_free_gb)
        if not report["ok"]:
            raise StageFailed("health", "; ".join(f"{c['name']}: {c['detail']}"
                                                  for c in report["checks"] if not c["ok"]))
    except StageFailed as failure:
        return Failed(message=str(failure))
    return out
