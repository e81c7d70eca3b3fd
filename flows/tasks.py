"""Every Prefect task of every flow, with its timeout and the one retry policy.

Each task calls one plain, typed function of `ingest/`, `features/`, `training/` or `serving/`
(which tests call directly) and hands paths, never DataFrames, to the next. How they run:

- every task has a UI name, a run name and a timeout, so a hung run ends;
- only MongoDB work is retried, with back-off, and only on network-level errors
  (`MONGO_RETRIES`); bad data or a logic error fails at once;
- the partitioned stages (validation, features, scoring, publish) take the flow's `mapper`
  (`flows/runner.py`), which runs their parts in the flow's process or on a Dask cluster;
  a part whose Dask worker dies is rerun by the scheduler;
- features, training and scoring are cached on content hashes of their inputs, with results
  persisted under `<data_dir>/prefect/results/` (`flows/caching.py`);
- the project's own errors end a task in a Failed state whose message is the error's one line
  (`expected_errors_fail`; multi-line errors are joined by `flows.reporting.one_line`);
  `run_stage` turns that state into `StageFailed`, which the flow returns as its own Failed
  state, and adds the stage's seconds to the flow's `timings`;
- run names say what a run does (`build features <snapshot> (all events)`); artifacts are tidy
  tables (`flows.reporting`); long steps draw progress bars on a terminal (`flows.progress`).

Two runs never publish at once because publishing goes through `serving.publish.publish_model`,
which holds the publish lock (a lease in MongoDB), not a Prefect concurrency limit: a limit kept
by a temporary Prefect server dies with it and could wedge later runs.
"""

from __future__ import annotations

import dataclasses
import functools
import time
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any, ParamSpec, TypeVar

from prefect import get_run_logger, task
from prefect.artifacts import (
    create_link_artifact,
    create_markdown_artifact,
    create_table_artifact,
)
from prefect.states import Failed, State
from pymongo.errors import AutoReconnect, NetworkTimeout, ServerSelectionTimeoutError

from features.snapshot import Manifest, load_manifest, manifest_path
from features.stage import build_features_as_of
from flows.caching import features_cache_key, result_storage, score_cache_key, train_cache_key
from flows.housekeeping import prune_all
from flows.ledger import read_ledger, record_outcome
from flows.progress import progress_bars
from flows.reporting import as_of_label, markdown_table, one_line, table_rows
from ingest.raw_store import StoredBatch
from ingest.report import ValidationReport
from ingest.sanitize import md_text
from ingest.stage import ingest_batch
from recsys.errors import RecsysError, StageFailed
from recsys.partitions import Mapper, serial_map
from recsys.settings import Settings
from serving.api.data_docs import data_docs_url, docs_dir
from serving.backup import backup_database, default_backup_root
from serving.health import check_health
from serving.publish import publish_model
from serving.store import open_store
from training.gate import decide
from training.stage import score_run_model, train_run_model

P = ParamSpec("P")
R = TypeVar("R")

# Timeouts per stage (seconds): generous for the full-size batch, finite so a hung run ends.
VALIDATE_TIMEOUT_S = 1800
FEATURES_TIMEOUT_S = 3600
TRAIN_TIMEOUT_S = 4 * 3600
SCORE_TIMEOUT_S = 3600
PUBLISH_TIMEOUT_S = 3 * 3600
BACKUP_TIMEOUT_S = 3 * 3600
MONGO_RETRY_DELAYS_S = [5, 30, 120]


def is_transient_mongo_error(task: Any, task_run: Any, state: State) -> bool:
    """Retry only on network-level MongoDB errors, never on bad data or logic errors."""
    try:
        state.result()
    except (AutoReconnect, NetworkTimeout, ServerSelectionTimeoutError):
        return True
    except Exception:  # noqa: BLE001 - any other error is final
        return False
    return False


MONGO_RETRIES: dict[str, Any] = {"retries": len(MONGO_RETRY_DELAYS_S),
                                 "retry_delay_seconds": MONGO_RETRY_DELAYS_S,
                                 "retry_condition_fn": is_transient_mongo_error}
"""The one retry policy: tasks that talk to MongoDB take these options, nothing else retries."""


def expected_errors_fail(fn: Callable[P, R]) -> Callable[P, R]:
    """Turn this project's own errors into a Failed state with a clear one-line message (no
    traceback)."""

    @functools.wraps(fn)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return fn(*args, **kwargs)
        except RecsysError as error:
            return Failed(message=one_line(error))  # type: ignore[return-value]

    return wrapper


def run_stage(stage: str, stage_task: Any, *args: Any, timings: dict[str, float] | None = None,
              **kwargs: Any) -> Any:
    """Run `stage_task` and return its result.

    Args:
        stage: the stage's name in messages and `timings`.
        stage_task: the task; `args` and `kwargs` are its arguments.
        timings: when given, the stage's wall-clock seconds are added under `stage` (failed
            runs included).

    Raises:
        StageFailed: the task ended in any state but Completed (its one-line message says why).
    """
    started = time.perf_counter()
    try:
        state = stage_task(*args, return_state=True, **kwargs)
    finally:
        if timings is not None:
            timings[stage] = timings.get(stage, 0.0) + time.perf_counter() - started
    if not state.is_completed():
        raise StageFailed(stage, one_line(state.message) if state.message else None)
    return state.result()


def run_cached(stage: str, stage_task: Any, settings: Settings, *args: Any,
               timings: dict[str, float] | None = None, **kwargs: Any) -> Any:
    """Run a cached stage (results persisted under the data dir); recompute when the cached
    output path no longer exists (pruned since). `timings` as in `run_stage`."""
    cached = stage_task.with_options(result_storage=result_storage(settings))
    result = run_stage(stage, cached, *args, timings=timings, **kwargs)
    if isinstance(result, str | Path) and not Path(result).exists():
        get_run_logger().info("cached %s output %s is gone; recomputing", stage, result)
        result = run_stage(stage, cached.with_options(refresh_cache=True), *args,
                           timings=timings, **kwargs)
    return result


def read_manifest(manifest_file: Path) -> Manifest:
    """The feature manifest a task received as a path."""
    path = Path(manifest_file)  # <features_root>/manifests/<snapshot id>.json
    return load_manifest(path.parent.parent, path.stem)


def _report_link(report: ValidationReport, run_id: str, settings: Settings) -> str | None:
    """The http(s) URL of a validation report's Data Docs page as the API serves it (browsers
    refuse file:// links from the Prefect UI), when ingest produced one."""
    if not report.data_docs:
        return None
    site = docs_dir(settings.validation_dir, run_id).resolve()
    page = Path(report.data_docs).resolve()
    return data_docs_url(settings, run_id,
                         page.relative_to(site).as_posix() if page.is_relative_to(site) else "")


# --------------------------------------------------------------------------- run names
# Prefect calls these with the task run's parameters (arguments as passed), so a name can say
# what the run does without "None" in it.

def features_run_name(parameters: dict[str, Any]) -> str:
    """``build features <snapshot> (all events)`` or ``... (as of 2024-01-07)``."""
    return (f"build features {parameters.get('snapshot_id')} "
            f"({as_of_label(parameters.get('as_of'))})")


def train_run_name(parameters: dict[str, Any]) -> str:
    """``train model <version>``, ``... with search`` when the search runs."""
    search = " with search" if parameters.get("search") else ""
    return f"train model {parameters.get('version')}{search}"


def _model_name(parameters: dict[str, Any]) -> str:
    return Path(str(parameters.get("model_dir", ""))).name


def score_run_name(parameters: dict[str, Any]) -> str:
    """``score model <version>``."""
    return f"score model {_model_name(parameters)}"


def gate_run_name(parameters: dict[str, Any]) -> str:
    """``gate model <version> against the champion``."""
    return f"gate model {_model_name(parameters)} against the champion"


def publish_run_name(parameters: dict[str, Any]) -> str:
    """``publish model <version>``."""
    return f"publish model {_model_name(parameters)}"


# --------------------------------------------------------------------------- pipeline stages

@task(name="validate-and-store", task_run_name="validate and store {input_dir}",
      timeout_seconds=VALIDATE_TIMEOUT_S)
@expected_errors_fail
def validate_batch(input_dir: Path, run_id: str, settings: Settings,
                   mapper: Mapper = serial_map) -> StoredBatch:
    """Read and validate the batch (quarantined on failure); write it once into the raw store
    (idempotent per batch). Returns the batch as stored. `mapper` runs the chunks of a
    streamed table."""

    def publish_report(report: ValidationReport) -> None:  # on success and before a rejection
        # to_markdown() shortens and escapes the batch's values; the folder name is escaped too.
        create_markdown_artifact(key="validation-report", markdown=report.to_markdown(),
                                 description=f"Data contract results for {md_text(input_dir)}")
        link = _report_link(report, run_id, settings)
        if link:
            create_link_artifact(key="validation-data-docs", link=link, link_text="Data Docs",
                                 description="Great Expectations Data Docs for "
                                             f"{md_text(input_dir)}")

    with progress_bars() as progress:
        stored = ingest_batch(input_dir, run_id=run_id, settings=settings,
                              on_report=publish_report, progress=progress,
                              mapper=mapper).stored
    get_run_logger().info("raw store after %s: batch %s", run_id, stored.batch_id)
    return stored


@task(name="build-features", task_run_name=features_run_name,
      timeout_seconds=FEATURES_TIMEOUT_S, cache_key_fn=features_cache_key, persist_result=True)
@expected_errors_fail
def build_features(as_of: str | None, snapshot_id: str, settings: Settings,
                   mapper: Mapper = serial_map) -> Path:
    """Feature snapshot from the raw store, using only events at or before `as_of` (None: all).

    Cached on the stored batches, the feature definitions and the as-of time (not on the
    runner: the snapshot is the same wherever its parts ran): an unchanged store is not
    rebuilt. `mapper` runs the per-user-partition parts.
    """
    with progress_bars() as progress:
        manifest = build_features_as_of(datetime.fromisoformat(as_of) if as_of else None,
                                        snapshot_id=snapshot_id, settings=settings,
                                        progress=progress, mapper=mapper)
    get_run_logger().info("feature snapshot %s (%s): %s", snapshot_id, as_of_label(as_of),
                          ", ".join(f"{name} {view.rows} rows"
                                    for name, view in manifest.views.items()))
    return manifest_path(settings.features_dir, manifest.snapshot_id)


@task(name="train-model", task_run_name=train_run_name, timeout_seconds=TRAIN_TIMEOUT_S,
      cache_key_fn=train_cache_key, persist_result=True)
@expected_errors_fail
def train_model(manifest_file: Path, version: str, settings: Settings,
                search: bool = False) -> Path:
    """Fit ALS on a holdout split, evaluate against popularity, refit on all, save the model.

    Cached on the feature content and the model settings: the same features train once.
    """
    with progress_bars() as progress:
        model_dir, result = train_run_model(read_manifest(manifest_file), version=version,
                                            settings=settings, search=search, progress=progress)
    metrics = result.metrics
    create_table_artifact(
        key="training-metrics",
        table=table_rows({"model": name, **values} for name, values in metrics.items()
                         if name in ("als", "popular") and isinstance(values, dict)),
        description=f"Holdout metrics for model {version} (k={settings.eval_k}, "
                    f"{md_text(metrics.get('holdout_split'))} split, {metrics.get('n_users')} "
                    f"users x {metrics.get('n_items')} items)",
    )
    return model_dir


@task(name="score-model", task_run_name=score_run_name, timeout_seconds=SCORE_TIMEOUT_S,
      cache_key_fn=score_cache_key, persist_result=True)
@expected_errors_fail
def score_model(model_dir: Path, manifest_file: Path, settings: Settings,
                mapper: Mapper = serial_map) -> Path:
    """Top-N per user, similar items per item and the popular list, saved with the model;
    `mapper` runs the per-user-partition parts and the items part."""
    with progress_bars() as progress:
        return score_run_model(model_dir, read_manifest(manifest_file), settings=settings,
                               progress=progress, mapper=mapper)


@task(name="gate-model", task_run_name=gate_run_name, timeout_seconds=SCORE_TIMEOUT_S,
      **MONGO_RETRIES)
@expected_errors_fail
def gate_model(model_dir: Path, manifest_file: Path, settings: Settings) -> dict[str, Any]:
    """Champion/challenger gate: should this model replace the one being served?"""
    with open_store(settings) as store:
        champion = store.active_version()
    outcome = decide(model_dir, read_manifest(manifest_file), champion_version=champion,
                     settings=settings)
    decision = {**dataclasses.asdict(outcome), "publish": bool(outcome.publish),
                "reason": str(outcome.reason)}
    verdict = "publish" if decision["publish"] else "keep champion"
    get_run_logger().info("gate for %s: %s (%s)", Path(model_dir).name, verdict, decision["reason"])
    create_markdown_artifact(
        key="gate-decision",
        markdown=f"**{verdict}**: {md_text(decision['reason'])}\n\n" + markdown_table(decision),
        description=f"Champion/challenger decision for {Path(model_dir).name}",
    )
    return decision


@task(name="publish-version", task_run_name=publish_run_name,
      timeout_seconds=PUBLISH_TIMEOUT_S, **MONGO_RETRIES)
@expected_errors_fail
def publish_version(model_dir: Path, settings: Settings, champion: str | None,
                    mapper: Mapper = serial_map) -> dict[str, Any]:
    """Serve the new version through `serving.publish.publish_model`: under the publish lock,
    write and verify it, materialize its feature snapshot online, switch the model and the
    online features together, prune old ones. A version that is already active (an unchanged
    input, served from the cache) is not written again (`skipped`); when the active version is
    no longer the `champion` the gate compared against, nothing is switched (`superseded`).
    `mapper` runs the per-user-partition writers."""
    version = Path(model_dir).name
    with progress_bars() as progress:
        summary = publish_model(settings, version, holder=f"pipeline publish {version}",
                                expected_active=champion, progress=progress,
                                mapper=mapper).to_dict()
    create_markdown_artifact(key="publish-summary", markdown=markdown_table(summary),
                             description=f"Published model version {version}")
    return summary


@task(name="note-champion-kept", task_run_name="keep champion over {version}", timeout_seconds=60)
def note_champion_kept(version: str, why: str) -> None:
    """Say in the UI that `version` was registered but not served, and why."""
    get_run_logger().info("model %s registered, not published: %s", version, why)
    create_markdown_artifact(
        key="publish-summary",
        markdown=f"**champion kept**: model {md_text(version)} was not published "
                 f"({md_text(why)}).",
        description=f"Model version {version} registered only")


# --------------------------------------------------------------------------- incoming batches

@task(name="find-new-batches", task_run_name="find new batches in {root}", timeout_seconds=120)
def find_new_batches(root: Path, ledger_file: Path) -> list[Path]:
    """Batch folders under `root` not yet in the ledger, sorted by name."""
    if not root.is_dir():
        get_run_logger().info("incoming folder %s does not exist yet; nothing to do", root)
        return []
    done = read_ledger(ledger_file)
    return sorted(p for p in root.iterdir()
                  if p.is_dir() and p.name[0] not in "._" and p.name not in done)


@task(name="record-batch", task_run_name="record {batch_name}: {status}", timeout_seconds=60)
def record_batch(ledger_file: Path, batch_name: str, run_id: str, status: str,
                 message: str) -> None:
    """Add one processed batch folder to the ledger (atomic rewrite)."""
    record_outcome(ledger_file, batch_name, run_id=run_id, status=status, message=message)


# --------------------------------------------------------------------------- maintenance

@task(name="backup-mongodb", task_run_name="back up MongoDB database {settings.mongodb_db}",
      timeout_seconds=BACKUP_TIMEOUT_S, **MONGO_RETRIES)
@expected_errors_fail
def backup_mongodb(settings: Settings, backup_root: Path | None = None) -> dict[str, Any]:
    """Back up the serving database (mongodump when installed, else the Python fallback)."""
    result = backup_database(settings.mongodb_uri, settings.mongodb_db,
                             backup_root or default_backup_root(settings),
                             timeout_ms=settings.mongodb_timeout_ms)
    summary = {"path": result.path, "method": result.method,
               "collections": len(result.collections),
               "documents": sum(result.collections.values()),
               "seconds": round(result.seconds, 3)}
    create_markdown_artifact(key="mongodb-backup", markdown=markdown_table(summary),
                             description=f"Backup of {settings.mongodb_db}")
    return summary


@task(name="prune-data", task_run_name="prune the data dir", timeout_seconds=1800)
@expected_errors_fail
def prune_data(settings: Settings, keep_snapshots: int | None, keep_models: int | None,
               keep_backups: int, log_days: float) -> dict[str, list[str]]:
    """Delete old feature snapshots, model versions, backups, logs and Prefect results."""
    removed = prune_all(settings, keep_snapshots=keep_snapshots, keep_models=keep_models,
                        keep_backups=keep_backups, log_days=log_days)
    get_run_logger().info("pruned: %s", ", ".join(f"{kind} {len(items)}"
                                                  for kind, items in removed.items()) or "nothing")
    return removed


@task(name="check-health", task_run_name="check health", timeout_seconds=300)
@expected_errors_fail
def health_check(settings: Settings, api_url: str | None, prefect_url: str | None,
                 min_free_gb: float) -> dict[str, Any]:
    """MongoDB and the active version, disk, and the API / Prefect when URLs are given."""
    report = check_health(settings, api_url=api_url, prefect_url=prefect_url,
                          min_free_gb=min_free_gb)
    create_table_artifact(key="health-check",
                          table=table_rows({"check": c.name, "ok": c.ok, "detail": c.detail,
                                            "seconds": c.seconds} for c in report.checks),
                          description="Deployment health")
    return report.to_dict()
