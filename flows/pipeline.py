"""The batch pipeline: validate -> features -> train + evaluate -> score -> gate -> publish.

Thin orchestration only: each task calls one plain function of `ingest/`, `features/`,
`training/` or `serving/` and hands paths (never DataFrames) to the next.

How Prefect runs them (see `flows/common.py`):

- every task has a UI name, a run name and a timeout; only MongoDB writes are retried, with
  back-off, and only on network errors (`retry_condition_fn`);
- features, training and scoring are cached on content hashes of their inputs, with results
  persisted under `<data_dir>/prefect/results/`, so an unchanged input is not recomputed;
- publishing holds the `recsys-publish` global concurrency slot, so two runs never publish at once;
- artifacts: the validation report (plus a Data Docs link when ingest writes one), a table of
  training metrics, the gate decision and the publish summary.

Expected failures (unreadable input, a failed data contract, an unusable model...) end the run
in a Failed state whose message names the stage and the cause, without a traceback; nothing
downstream runs, so what is being served never changes. When the champion/challenger gate says
no, the run still succeeds: the champion keeps serving and the result says so.
"""

from __future__ import annotations

import functools
import json
import secrets
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, ParamSpec, TypeVar

from prefect import flow, get_run_logger, task
from prefect.artifacts import (
    create_link_artifact,
    create_markdown_artifact,
    create_table_artifact,
)
from prefect.states import Failed, State

from flows.common import (
    features_cache_key,
    markdown_table,
    publish_lock,
    report_run_outcome,
    result_storage,
    score_cache_key,
    train_cache_key,
)
from recsys.errors import RecsysError
from recsys.settings import Settings

P = ParamSpec("P")
R = TypeVar("R")

# Timeouts per stage (seconds): generous for the full-size batch, finite so a hung run ends.
VALIDATE_TIMEOUT_S = 1800
FEATURES_TIMEOUT_S = 3600
TRAIN_TIMEOUT_S = 4 * 3600
SCORE_TIMEOUT_S = 3600
PUBLISH_TIMEOUT_S = 3 * 3600
MONGO_RETRY_DELAYS_S = [5, 30, 120]


def new_run_id() -> str:
    """Sortable, unique id for a run; also names its feature snapshot and model version."""
    return datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ") + "-" + secrets.token_hex(3)


def expected_errors_fail(fn: Callable[P, R]) -> Callable[P, R]:
    """Turn this project's own errors into a Failed state with a clear message (no traceback)."""

    @functools.wraps(fn)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return fn(*args, **kwargs)
        except RecsysError as error:
            return Failed(message=str(error))  # type: ignore[return-value]

    return wrapper


def is_transient_mongo_error(task: Any, task_run: Any, state: State) -> bool:
    """Retry only on network-level MongoDB errors, never on bad data or logic errors."""
    from pymongo.errors import AutoReconnect, NetworkTimeout, ServerSelectionTimeoutError

    try:
        state.result()
    except (AutoReconnect, NetworkTimeout, ServerSelectionTimeoutError):
        return True
    except Exception:  # noqa: BLE001 - any other error is final
        return False
    return False


def _manifest(manifest_file: Path) -> Any:
    from features.snapshot import Manifest

    return Manifest.from_dict(json.loads(Path(manifest_file).read_text()))


def _report_link(report: Any) -> str | None:
    """The Data Docs page of a validation report, when ingest produced one."""
    for name in ("data_docs_url", "data_docs_path", "data_docs"):
        value = getattr(report, name, None)
        if value:
            text = str(value)
            return text if "://" in text else Path(text).resolve().as_uri()
    return None


@task(name="validate-batch", task_run_name="validate {input_dir}",
      timeout_seconds=VALIDATE_TIMEOUT_S)
@expected_errors_fail
def validate_batch(input_dir: Path, run_id: str, settings: Settings) -> dict[str, Path]:
    """Read and validate the batch (quarantined on failure); write it as clean parquet."""
    from ingest.stage import ingest_batch

    def publish_report(report: Any) -> None:  # called on success and before a rejection
        create_markdown_artifact(key="validation-report", markdown=report.to_markdown(),
                                 description=f"Data contract results for {input_dir}")
        link = _report_link(report)
        if link:
            create_link_artifact(key="validation-data-docs", link=link, link_text="Data Docs",
                                 description=f"Great Expectations Data Docs for {input_dir}")

    raw_files, _ = ingest_batch(input_dir, run_id=run_id, settings=settings,
                                on_report=publish_report)
    return raw_files


@task(name="ingest-into-store", task_run_name="store {run_id}", timeout_seconds=FEATURES_TIMEOUT_S)
@expected_errors_fail
def ingest_into_store(raw_files: dict[str, Path], run_id: str, settings: Settings) -> Any:
    """Append a validated batch to the incremental raw store (idempotent per batch)."""
    from features.stage import ingest_run_batch

    summary = ingest_run_batch(raw_files, settings=settings)
    get_run_logger().info("raw store after %s: %s", run_id, summary)
    return summary


@task(name="build-features", task_run_name="build features {snapshot_id} as of {as_of}",
      timeout_seconds=FEATURES_TIMEOUT_S, cache_key_fn=features_cache_key, persist_result=True)
@expected_errors_fail
def build_features(as_of: str | None, snapshot_id: str, settings: Settings) -> Path:
    """Feature snapshot from the raw store, using only events at or before `as_of` (None: all).

    Cached on the stored batches, the feature definitions and the as-of time: an unchanged
    store is not rebuilt.
    """
    from features.snapshot import manifest_path
    from features.stage import build_features_as_of

    manifest = build_features_as_of(datetime.fromisoformat(as_of) if as_of else None,
                                    snapshot_id=snapshot_id, settings=settings)
    get_run_logger().info("feature snapshot %s as of %s: %s", snapshot_id, as_of or "now",
                          {name: view.rows for name, view in manifest.views.items()})
    return manifest_path(settings.features_dir, manifest.snapshot_id)


@task(name="materialize-online", task_run_name="materialize {manifest_file.stem}",
      timeout_seconds=FEATURES_TIMEOUT_S, retries=3, retry_delay_seconds=MONGO_RETRY_DELAYS_S,
      retry_condition_fn=is_transient_mongo_error)
@expected_errors_fail
def materialize_online(manifest_file: Path, settings: Settings) -> Any:
    """Copy the snapshot's latest user and item features to MongoDB (the online store)."""
    from features.online import materialize_online as materialize

    return materialize(_manifest(manifest_file), settings=settings)


@task(name="train-model", task_run_name="train {version}", timeout_seconds=TRAIN_TIMEOUT_S,
      cache_key_fn=train_cache_key, persist_result=True)
@expected_errors_fail
def train_model(manifest_file: Path, version: str, settings: Settings,
                search: bool = False) -> Path:
    """Fit ALS on a holdout split, evaluate against popularity, refit on all, save the model.

    Cached on the feature content and the model settings: the same features train once.
    """
    from training.stage import train_run_model

    model_dir, result = train_run_model(_manifest(manifest_file), version=version,
                                        settings=settings, search=search)
    create_table_artifact(
        key="training-metrics",
        table=[{"model": name, **{m: round(v, 4) for m, v in values.items()
                                  if isinstance(v, int | float)}}
               for name, values in result.metrics.items()
               if name in ("als", "popular") and isinstance(values, dict)],
        description=f"Holdout metrics for model {version} (k={settings.eval_k})",
    )
    return model_dir


@task(name="score-model", task_run_name="score {model_dir.name}", timeout_seconds=SCORE_TIMEOUT_S,
      cache_key_fn=score_cache_key, persist_result=True)
@expected_errors_fail
def score_model(model_dir: Path, manifest_file: Path, settings: Settings) -> Path:
    """Top-N per user, similar items per item and the popular list, saved next to the model."""
    from training.stage import score_run_model

    return score_run_model(model_dir, _manifest(manifest_file), settings=settings)


@task(name="gate-model", task_run_name="gate {model_dir.name}", timeout_seconds=SCORE_TIMEOUT_S,
      retries=2, retry_delay_seconds=MONGO_RETRY_DELAYS_S[:2],
      retry_condition_fn=is_transient_mongo_error)
@expected_errors_fail
def gate_model(model_dir: Path, manifest_file: Path, settings: Settings) -> dict[str, Any]:
    """Champion/challenger gate: should this model replace the one being served?"""
    from training.gate import decide

    outcome = decide(model_dir, _manifest(manifest_file), settings=settings)
    decision = {**_as_dict(outcome), "publish": bool(outcome.publish),
                "reason": str(outcome.reason)}
    verdict = "publish" if decision["publish"] else "keep champion"
    get_run_logger().info("gate for %s: %s (%s)", Path(model_dir).name, verdict, decision["reason"])
    create_markdown_artifact(
        key="gate-decision",
        markdown=f"**{verdict}**: {decision['reason']}\n\n" + markdown_table(decision),
        description=f"Champion/challenger decision for {Path(model_dir).name}",
    )
    return decision


def _as_dict(value: Any) -> dict[str, Any]:
    import dataclasses

    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return dataclasses.asdict(value)
    dump = getattr(value, "model_dump", None)
    return dict(dump()) if dump else dict(vars(value))


@task(name="publish-version", task_run_name="publish {model_dir.name}", retries=3,
      retry_delay_seconds=MONGO_RETRY_DELAYS_S, retry_condition_fn=is_transient_mongo_error,
      timeout_seconds=PUBLISH_TIMEOUT_S)
@expected_errors_fail
def publish_version(model_dir: Path, scores_file: Path, settings: Settings) -> dict[str, Any]:
    """Write the new version to MongoDB, verify it, switch the active pointer, prune old ones.

    Holds the `recsys-publish` concurrency slot, so two runs never publish at once. A version
    that is already active (an unchanged input, served from the cache) is not written again.
    """
    from serving.stage import publish_run
    from serving.store import open_store

    version = Path(model_dir).name
    with publish_lock():
        with open_store(settings) as store:
            already_active = store.active_version() == version
        if already_active:
            summary: dict[str, Any] = {"version": version, "active_version": version,
                                       "skipped": "already the active version"}
        else:
            summary = publish_run(model_dir, scores_file, settings=settings)
    create_markdown_artifact(key="publish-summary", markdown=markdown_table(summary),
                             description=f"Published model version {version}")
    return summary


@dataclass(frozen=True)
class PipelineResult:
    """What a successful run produced; `published` is False when the gate kept the champion."""

    run_id: str
    version: str
    model_dir: str
    metrics: dict[str, Any]
    publish: dict[str, Any]
    published: bool = True
    gate: dict[str, Any] = field(default_factory=dict)


class _StageFailure(Exception):
    def __init__(self, stage: str, message: str | None) -> None:
        self.stage, self.message = stage, message or "unknown error"
        super().__init__(f"stage '{stage}' failed: {self.message}")


def _run_stage(stage: str, stage_task: Any, *args: Any, **kwargs: Any) -> Any:
    state = stage_task(*args, return_state=True, **kwargs)
    if not state.is_completed():
        raise _StageFailure(stage, state.message)
    return state.result()


def _cached(stage_task: Any, settings: Settings) -> Any:
    """`stage_task` persisting its result (and so its cache) under the data dir."""
    return stage_task.with_options(result_storage=result_storage(settings))


def _run_cached(stage: str, stage_task: Any, settings: Settings, *args: Any,
                **kwargs: Any) -> Any:
    """Run a cached stage; recompute when the cached output path no longer exists (pruned)."""
    result = _run_stage(stage, _cached(stage_task, settings), *args, **kwargs)
    if isinstance(result, str | Path) and not Path(result).exists():
        get_run_logger().info("cached %s output %s is gone; recomputing", stage, result)
        result = _run_stage(stage, _cached(stage_task, settings).with_options(refresh_cache=True),
                            *args, **kwargs)
    return result


def train_score_gate_publish(manifest_file: Path, version: str, settings: Settings, *,
                             search: bool = False, publish: bool = True,
                             run_id: str | None = None) -> PipelineResult:
    """The shared tail of every flow: train, score, gate, then publish when the gate agrees.

    Raises:
        _StageFailure: a stage failed (caught by the calling flow and turned into its state).
    """
    model_dir = _run_cached("train", train_model, settings, manifest_file, version, settings,
                            search=search)
    scores_file = _run_cached("score", score_model, settings, model_dir, manifest_file, settings)
    metrics = json.loads((Path(model_dir) / "metadata.json").read_text()).get("metrics", {})
    decision = _run_stage("gate", gate_model, model_dir, manifest_file, settings)
    summary: dict[str, Any] = {}
    published = False
    if publish and decision["publish"]:
        summary = _run_stage("publish", publish_version, model_dir, scores_file, settings)
        published = True
        # Online features follow the served model: only a published run switches them.
        _run_stage("materialize", materialize_online, manifest_file, settings)
    else:
        why = decision["reason"] if not decision["publish"] else "publishing not requested"
        get_run_logger().info("model %s registered, not published: %s", Path(model_dir).name, why)
        create_markdown_artifact(
            key="publish-summary",
            markdown=f"**champion kept**: model {Path(model_dir).name} was not published "
                     f"({why}).",
            description=f"Model version {Path(model_dir).name} registered only")
    return PipelineResult(run_id=run_id or version, version=Path(model_dir).name,
                          model_dir=str(model_dir), metrics=metrics, publish=summary,
                          published=published, gate=decision)


@flow(name="batch-pipeline", on_completion=[report_run_outcome],
      on_failure=[report_run_outcome],
      flow_run_name="pipeline {input_dir}")
def batch_pipeline(input_dir: str, run_id: str | None = None,
                   publish: bool = True) -> PipelineResult | State:
    """Validate a batch, build its features, train, evaluate, gate and publish a new version.

    The batch is appended to the incremental raw store and the features are built from
    everything stored so far.

    Args:
        input_dir: the batch directory (users, items, interactions files).
        run_id: names the raw batch, the feature snapshot and the model version (default: new).
        publish: False registers the model without touching what is served.
    """
    settings = Settings()
    run_id = run_id or new_run_id()
    logger = get_run_logger()
    logger.info("run %s: input %s, data dir %s, MongoDB db %s", run_id, input_dir,
                settings.data_dir, settings.mongodb_db)
    try:
        raw_files = _run_stage("validate", validate_batch, Path(input_dir), run_id, settings)
        _run_stage("store", ingest_into_store, raw_files, run_id, settings)
        manifest_file = _run_cached("features", build_features, settings, None, run_id, settings)
        result = train_score_gate_publish(manifest_file, run_id, settings, publish=publish,
                                          run_id=run_id)
    except _StageFailure as failure:
        return Failed(message=str(failure))
    if not result.published:
        logger.info("run %s: champion kept; model %s registered only", run_id, result.version)
    return result
