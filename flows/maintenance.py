"""Maintenance: back up MongoDB, prune old snapshots/models/backups/logs, check health.

Each step is a task around one function of `infra.scripts`; the run fails (naming the step) when
the backup fails or the health check finds a problem, so the UI shows it in red.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from prefect import flow, get_run_logger, task
from prefect.artifacts import create_markdown_artifact, create_table_artifact
from prefect.states import Failed, State

from flows.common import markdown_table, report_run_outcome
from flows.pipeline import MONGO_RETRY_DELAYS_S, is_transient_mongo_error
from infra.scripts.backup import backup_database, default_backup_root
from infra.scripts.health import check_health
from infra.scripts.prune import prune_all
from recsys.settings import Settings


@task(name="backup-mongodb", task_run_name="backup {settings.mongodb_db}", retries=2,
      retry_delay_seconds=MONGO_RETRY_DELAYS_S[:2], retry_condition_fn=is_transient_mongo_error,
      timeout_seconds=3 * 3600)
def backup_mongodb(settings: Settings, backup_root: Path | None = None) -> dict[str, Any]:
    """Back up the serving database (mongodump when installed, else the Python fallback)."""
    result = backup_database(settings.mongodb_uri, settings.mongodb_db,
                             backup_root or default_backup_root(settings),
                             timeout_ms=settings.mongodb_timeout_ms)
    summary = {"path": result.path, "method": result.method,
               "collections": len(result.collections),
               "documents": sum(result.collections.values()),
               "seconds": round(result.seconds, 2)}
    create_markdown_artifact(key="mongodb-backup", markdown=markdown_table(summary),
                             description=f"Backup of {settings.mongodb_db}")
    return summary


@task(name="prune-data", task_run_name="prune data dir", timeout_seconds=1800)
def prune_data(settings: Settings, keep_snapshots: int, keep_models: int, keep_backups: int,
               log_days: float) -> dict[str, list[str]]:
    """Delete old feature snapshots, model versions, backups, logs and Prefect results."""
    removed = prune_all(settings, keep_snapshots=keep_snapshots, keep_models=keep_models,
                        keep_backups=keep_backups, log_days=log_days)
    get_run_logger().info("pruned: %s", {kind: len(items) for kind, items in removed.items()})
    return removed


@task(name="check-health", task_run_name="health check", timeout_seconds=300)
def health_check(settings: Settings, api_url: str | None, prefect_url: str | None,
                 min_free_gb: float) -> dict[str, Any]:
    """MongoDB and the active version, disk, and the API / Prefect when URLs are given."""
    report = check_health(settings, api_url=api_url, prefect_url=prefect_url,
                          min_free_gb=min_free_gb)
    create_table_artifact(key="health-check",
                          table=[{"check": c.name, "ok": c.ok, "detail": c.detail,
                                  "seconds": c.seconds} for c in report.checks],
                          description="Deployment health")
    return report.to_dict()


@flow(name="maintenance", on_completion=[report_run_outcome],
      on_failure=[report_run_outcome],
      flow_run_name="maintenance")
def maintenance(backup: bool = True, prune: bool = True, keep_snapshots: int = 5,
                keep_models: int = 5, keep_backups: int = 7, log_days: float = 14,
                api_url: str | None = None, prefect_url: str | None = None,
                min_free_gb: float = 1.0) -> dict[str, Any] | State:
    """Back up, prune, then check health; Failed (naming the step) if a step fails.

    Args:
        backup: back up the serving database first.
        prune: apply the retention rules afterwards (only after a successful backup).
        keep_snapshots / keep_models / keep_backups: how many of each to keep (newest);
            models MongoDB still lists, and the snapshots of kept models, are always kept.
        log_days: age in days after which logs and Prefect results are deleted.
        api_url / prefect_url: also check these services when given.
        min_free_gb: free disk required under the data dir.
    """
    settings = Settings()
    out: dict[str, Any] = {}
    if backup:
        state = backup_mongodb(settings, return_state=True)
        if not state.is_completed():
            return Failed(message=f"step 'backup' failed: {state.message}")
        out["backup"] = state.result()
    if prune:
        state = prune_data(settings, keep_snapshots, keep_models, keep_backups, log_days,
                           return_state=True)
        if not state.is_completed():
            return Failed(message=f"step 'prune' failed: {state.message}")
        out["pruned"] = {kind: len(items) for kind, items in state.result().items()}
    report = health_check(settings, api_url, prefect_url, min_free_gb)
    out["health"] = report
    if not report["ok"]:
        bad = "; ".join(f"{c['name']}: {c['detail']}" for c in report["checks"] if not c["ok"])
        return Failed(message=f"step 'health' failed: {bad}")
    return out
