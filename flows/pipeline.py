"""The batch pipeline: validate -> features -> train + evaluate -> score -> publish.

Thin orchestration only: each task calls a plain function from `ingest/`, `features/`,
`training/` or `serving/` and passes paths (not DataFrames) to the next one.

Expected failures (bad input, a failed data contract, ...) end the run in a Failed state whose
message names the stage and the cause, without a traceback; nothing downstream runs, so what is
being served never changes.
"""

from __future__ import annotations

import functools
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, ParamSpec, TypeVar

from prefect import flow, get_run_logger, task
from prefect.artifacts import create_markdown_artifact, create_table_artifact
from prefect.states import Failed, State

from recsys.errors import InputFileError, RecsysError, ValidationFailed
from recsys.settings import Settings

P = ParamSpec("P")
R = TypeVar("R")


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


@task(name="validate-batch", task_run_name="validate {input_dir}")
@expected_errors_fail
def validate_batch(input_dir: Path, run_id: str, settings: Settings) -> dict[str, Path]:
    """Read and validate the batch; on failure quarantine it; on success write clean parquet."""
    from ingest.quarantine import quarantine_batch
    from ingest.reader import normalize_batch, read_batch, write_batch_parquet
    from ingest.validate import validate_batch as run_validation

    from ingest.validate import ValidationReport

    logger = get_run_logger()
    try:
        batch = read_batch(input_dir)
    except InputFileError as error:
        if Path(input_dir).is_dir():
            quarantined = quarantine_batch(input_dir, quarantine_root=settings.quarantine_dir,
                                           run_id=run_id,
                                           report=ValidationReport.from_input_error(error))
            raise InputFileError(error.path, f"{error.problem} (batch quarantined in "
                                 f"{quarantined})", column=error.column, rule=error.rule) from None
        raise
    report = run_validation(batch, expectations_dir=settings.expectations_dir)
    create_markdown_artifact(key="validation-report", markdown=report.to_markdown(),
                             description=f"Data contract results for {input_dir}")
    if not report.success:
        quarantined = quarantine_batch(batch, quarantine_root=settings.quarantine_dir,
                                       run_id=run_id, report=report)
        raise ValidationFailed(report.failures, quarantine_dir=quarantined)
    raw_files = write_batch_parquet(normalize_batch(batch), settings.raw_dir / run_id)
    logger.info("batch valid: %s", {k: len(getattr(batch, k)) for k in
                                    ("users", "items", "interactions")})
    return raw_files


@task(name="build-features", task_run_name="build features {snapshot_id}")
@expected_errors_fail
def build_features(raw_files: dict[str, Path], snapshot_id: str, settings: Settings) -> Path:
    """DuckDB feature snapshot; returns the manifest path."""
    from features.snapshot import build_snapshot, manifest_path

    manifest = build_snapshot(raw_files, features_root=settings.features_dir,
                              snapshot_id=snapshot_id)
    get_run_logger().info("feature snapshot %s: %s", snapshot_id,
                          {name: view.rows for name, view in manifest.views.items()})
    return manifest_path(settings.features_dir, snapshot_id)


@task(name="train-model", task_run_name="train {version}")
@expected_errors_fail
def train_model(manifest_file: Path, version: str, settings: Settings) -> Path:
    """Fit ALS on a holdout split, evaluate against popularity, refit on all, save the model."""
    from features.snapshot import Manifest
    from training.data import load_interactions
    from training.evaluate import train_and_evaluate
    from training.model import AlsParams
    from training.registry import save_model

    manifest = Manifest.from_dict(_read_json(manifest_file))
    data = load_interactions(manifest.view_path("interactions"))
    params = AlsParams(factors=settings.factors, regularization=settings.regularization,
                       alpha=settings.alpha, iterations=settings.iterations, seed=settings.seed)
    result = train_and_evaluate(data, params, k=settings.eval_k,
                                holdout_fraction=settings.holdout_fraction)
    model_dir = save_model(result, data, models_root=settings.models_dir, version=version,
                           metadata={"feature_snapshot": manifest.snapshot_id})
    create_table_artifact(
        key="training-metrics",
        table=[{"model": name, **{m: round(v, 4) for m, v in values.items()}}
               for name, values in result.metrics.items() if isinstance(values, dict)],
        description=f"Holdout metrics for model {version} (k={settings.eval_k})",
    )
    get_run_logger().info("model %s metrics: %s", version, result.metrics)
    return model_dir


@task(name="score-model", task_run_name="score {model_dir.name}")
@expected_errors_fail
def score_model(model_dir: Path, manifest_file: Path, settings: Settings) -> Path:
    """Top-N per user, similar items per item and the popular list, saved next to the model."""
    import numpy as np

    from features.snapshot import Manifest
    from recsys.errors import ModelError
    from training.data import load_interactions
    from training.model import popular_items, recommend_top_n, similar_items_top_n
    from training.registry import load_model

    manifest = Manifest.from_dict(_read_json(manifest_file))
    model, user_ids, item_ids, _ = load_model(model_dir)
    data = load_interactions(manifest.view_path("interactions"))
    if not (np.array_equal(data.user_ids, user_ids) and np.array_equal(data.item_ids, item_ids)):
        raise ModelError(f"model {model_dir.name} ids do not match snapshot {manifest.snapshot_id}")
    rec_items, rec_scores = recommend_top_n(model, data.matrix, settings.top_n)
    sim_items, sim_scores = similar_items_top_n(model, settings.similar_n)
    pop_items, pop_scores = popular_items(data.matrix, settings.popular_n)
    scores_file = model_dir / "scores.npz"
    np.savez(scores_file, rec_items=rec_items, rec_scores=rec_scores, similar_items=sim_items,
             similar_scores=sim_scores, popular_items=pop_items, popular_scores=pop_scores)
    return scores_file


@task(name="publish-version", task_run_name="publish {model_dir.name}", retries=2,
      retry_delay_seconds=[2, 10], retry_condition_fn=is_transient_mongo_error)
@expected_errors_fail
def publish_version(model_dir: Path, scores_file: Path, settings: Settings) -> dict[str, Any]:
    """Write the new version to MongoDB, verify it, switch the active pointer, prune old ones."""
    import numpy as np

    from serving.payload import PublishPayload
    from serving.store import MongoServingStore, mongo_client
    from training.registry import load_model

    model, user_ids, item_ids, metadata = load_model(model_dir)
    scores = np.load(scores_file)
    payload = PublishPayload(
        version=model_dir.name,
        generated_at=datetime.now(UTC),
        user_ids=user_ids,
        item_ids=item_ids,
        rec_items=scores["rec_items"],
        rec_scores=scores["rec_scores"],
        similar_items=scores["similar_items"],
        similar_scores=scores["similar_scores"],
        user_factors=_dense(model.user_factors),
        item_factors=_dense(model.item_factors),
        popular_items=scores["popular_items"],
        popular_scores=scores["popular_scores"],
        metadata=metadata,
    )
    client = mongo_client(settings)
    try:
        store = MongoServingStore(client[settings.mongodb_db])
        store.cleanup_incomplete()
        summary = store.publish(payload, batch_size=settings.publish_batch_size)
        store.activate(payload.version)
        dropped = store.prune(settings.keep_versions)
    finally:
        client.close()
    summary = {**summary, "active_version": payload.version, "dropped_versions": dropped}
    create_markdown_artifact(
        key="publish-summary",
        markdown="\n".join(["| field | value |", "|---|---|",
                            *(f"| {k} | {v} |" for k, v in summary.items())]),
        description=f"Published model version {payload.version}",
    )
    get_run_logger().info("published and activated %s", payload.version)
    return summary


def _dense(factors: Any) -> Any:
    import numpy as np

    to_numpy = getattr(factors, "to_numpy", None)  # implicit's GPU arrays
    return np.ascontiguousarray(to_numpy() if to_numpy else factors, dtype=np.float32)


def _read_json(path: Path) -> dict[str, Any]:
    import json

    return json.loads(Path(path).read_text())


@dataclass(frozen=True)
class PipelineResult:
    run_id: str
    version: str
    model_dir: str
    metrics: dict[str, Any]
    publish: dict[str, Any]


class _StageFailure(Exception):
    def __init__(self, stage: str, message: str | None) -> None:
        self.stage, self.message = stage, message or "unknown error"
        super().__init__(f"stage '{stage}' failed: {self.message}")


def _run_stage(stage: str, stage_task: Any, *args: Any) -> Any:
    state = stage_task(*args, return_state=True)
    if not state.is_completed():
        raise _StageFailure(stage, state.message)
    return state.result()


@flow(name="batch-pipeline", flow_run_name="pipeline {input_dir}", log_prints=True)
def batch_pipeline(input_dir: str, run_id: str | None = None) -> PipelineResult | State:
    """Validate a batch, build its features, train, evaluate and publish a new model version."""
    settings = Settings()
    run_id = run_id or new_run_id()
    get_run_logger().info("run %s: input %s, data dir %s, MongoDB db %s", run_id, input_dir,
                          settings.data_dir, settings.mongodb_db)
    try:
        raw_files = _run_stage("validate", validate_batch, Path(input_dir), run_id, settings)
        manifest_file = _run_stage("features", build_features, raw_files, run_id, settings)
        model_dir = _run_stage("train", train_model, manifest_file, run_id, settings)
        scores_file = _run_stage("score", score_model, model_dir, manifest_file, settings)
        summary = _run_stage("publish", publish_version, model_dir, scores_file, settings)
    except _StageFailure as failure:
        return Failed(message=str(failure))
    metrics = _read_json(Path(model_dir) / "metadata.json").get("metrics", {})
    return PipelineResult(run_id=run_id, version=Path(model_dir).name, model_dir=str(model_dir),
                          metrics=metrics, publish=summary)
