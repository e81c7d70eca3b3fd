"""The batch pipeline: validate -> features -> train + evaluate -> score -> publish.

Thin orchestration only: each task calls one plain function of `ingest/`, `features/`,
`training/` or `serving/` and hands paths (never DataFrames) to the next.

Expected failures (unreadable input, a failed data contract, an unusable model...) end the run
in a Failed state whose message names the stage and the cause, without a traceback; nothing
downstream runs, so what is being served never changes.
"""

from __future__ import annotations

import functools
import json
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, ParamSpec, TypeVar

from prefect import flow, get_run_logger, task
from prefect.artifacts import create_markdown_artifact, create_table_artifact
from prefect.states import Failed, State

from recsys.errors import RecsysError
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


def _manifest(manifest_file: Path) -> Any:
    from features.snapshot import Manifest

    return Manifest.from_dict(json.loads(Path(manifest_file).read_text()))


@task(name="validate-batch", task_run_name="validate {input_dir}")
@expected_errors_fail
def validate_batch(input_dir: Path, run_id: str, settings: Settings) -> dict[str, Path]:
    """Read and validate the batch (quarantined on failure); write it as clean parquet."""
    from ingest.stage import ingest_batch

    raw_files, report = ingest_batch(input_dir, run_id=run_id, settings=settings)
    create_markdown_artifact(key="validation-report", markdown=report.to_markdown(),
                             description=f"Data contract results for {input_dir}")
    return raw_files


@task(name="build-features", task_run_name="build features {snapshot_id}")
@expected_errors_fail
def build_features(raw_files: dict[str, Path], snapshot_id: str, settings: Settings) -> Path:
    """DuckDB feature snapshot; returns its manifest path."""
    from features.snapshot import manifest_path
    from features.stage import build_run_features

    manifest = build_run_features(raw_files, snapshot_id=snapshot_id, settings=settings)
    get_run_logger().info("feature snapshot %s: %s", snapshot_id,
                          {name: view.rows for name, view in manifest.views.items()})
    return manifest_path(settings.features_dir, snapshot_id)


@task(name="train-model", task_run_name="train {version}")
@expected_errors_fail
def train_model(manifest_file: Path, version: str, settings: Settings) -> Path:
    """Fit ALS on a holdout split, evaluate against popularity, refit on all, save the model."""
    from training.stage import train_run_model

    model_dir, result = train_run_model(_manifest(manifest_file), version=version,
                                        settings=settings)
    create_table_artifact(
        key="training-metrics",
        table=[{"model": name, **{m: round(v, 4) for m, v in values.items()}}
               for name, values in result.metrics.items()
               if name in ("als", "popular") and isinstance(values, dict)],
        description=f"Holdout metrics for model {version} (k={settings.eval_k})",
    )
    return model_dir


@task(name="score-model", task_run_name="score {model_dir.name}")
@expected_errors_fail
def score_model(model_dir: Path, manifest_file: Path, settings: Settings) -> Path:
    """Top-N per user, similar items per item and the popular list, saved next to the model."""
    from training.stage import score_run_model

    return score_run_model(model_dir, _manifest(manifest_file), settings=settings)


@task(name="publish-version", task_run_name="publish {model_dir.name}", retries=2,
      retry_delay_seconds=[2, 10], retry_condition_fn=is_transient_mongo_error)
@expected_errors_fail
def publish_version(model_dir: Path, scores_file: Path, settings: Settings) -> dict[str, Any]:
    """Write the new version to MongoDB, verify it, switch the active pointer, prune old ones."""
    from serving.stage import publish_run

    summary = publish_run(model_dir, scores_file, settings=settings)
    create_markdown_artifact(
        key="publish-summary",
        markdown="\n".join(["| field | value |", "|---|---|",
                            *(f"| {k} | {v} |" for k, v in summary.items())]),
        description=f"Published model version {model_dir.name}",
    )
    return summary


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


@flow(name="batch-pipeline", flow_run_name="pipeline {input_dir}")
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
    metrics = json.loads((Path(model_dir) / "metadata.json").read_text()).get("metrics", {})
    return PipelineResult(run_id=run_id, version=Path(model_dir).name, model_dir=str(model_dir),
                          metrics=metrics, publish=summary)
