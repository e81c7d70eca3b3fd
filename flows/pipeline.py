"""The batch pipeline: validate -> features -> train + evaluate -> score -> gate -> publish.

A recipe of named tasks (`flows/tasks.py`); each calls one plain function of `ingest/`,
`features/`, `training/` or `serving/` and hands paths, never DataFrames, to the next.

The partitioned stages (validation, features, scoring, publish) run their parts through the
flow's runner (`flows/runner.py`: in this process, or on a Dask cluster with
RECSYS_TASK_RUNNER=dask); the ALS fit and the gate run in the flow's process either way.

Expected failures (unreadable input, a failed data contract, an unusable model...) end the run
in a Failed state whose one-line message names the stage and the cause, without a traceback;
nothing downstream runs, so what is being served never changes. When the champion/challenger gate says
no, the run still succeeds: the champion keeps serving and the result says so.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from prefect import flow, get_run_logger
from prefect.states import Failed, State

from flows.reporting import report_run_outcome
from flows.runner import open_runner
from flows.tasks import (
    build_features,
    gate_model,
    note_champion_kept,
    publish_version,
    run_cached,
    run_stage,
    score_model,
    train_model,
    validate_batch,
)
from recsys.errors import DaskClusterError, StageFailed
from recsys.ids import new_run_id
from recsys.partitions import Mapper, serial_map
from recsys.settings import Settings, load_settings
from training.registry import model_metadata


@dataclass(frozen=True)
class PipelineResult:
    """What a successful run produced; `published` is False when the gate kept the champion;
    `timings`: wall-clock seconds per stage (validate, features, train, score, gate, publish;
    a cached stage takes about no time); `runner`: where the partitioned stages ran
    (`flows.runner.FlowRunner.description`)."""

    run_id: str
    version: str
    model_dir: str
    metrics: dict[str, Any]
    publish: dict[str, Any]
    published: bool = True
    gate: dict[str, Any] = field(default_factory=dict)
    timings: dict[str, float] = field(default_factory=dict)
    runner: str = ""


def features_as_of(as_of: str | None, snapshot_id: str, settings: Settings, *,
                   mapper: Mapper = serial_map,
                   timings: dict[str, float] | None = None) -> Path:
    """Feature manifest from the raw store as of `as_of` (None: everything stored so far);
    `mapper` runs its user partitions (`flows.runner`)."""
    return run_cached("features", build_features, settings, as_of, snapshot_id, settings,
                      mapper, timings=timings)


def train_score_gate_publish(manifest_file: Path, version: str, settings: Settings, *,
                             search: bool = False, publish: bool = True,
                             run_id: str | None = None, mapper: Mapper = serial_map,
                             runner: str = "",
                             timings: dict[str, float] | None = None) -> PipelineResult:
    """The shared tail of every flow: train, score, gate, then publish when the gate agrees.

    `mapper` runs the parts of scoring and publishing (the fit and the gate run here);
    `runner` describes it in the result. `timings` (seconds per stage, see `run_stage`) is
    filled in and returned in the result.

    Raises:
        StageFailed: a stage failed (the calling flow returns it as its Failed state).
    """
    timings = {} if timings is None else timings
    model_dir = run_cached("train", train_model, settings, manifest_file, version, settings,
                           search=search, timings=timings)
    run_cached("score", score_model, settings, model_dir, manifest_file, settings, mapper,
               timings=timings)
    decision = run_stage("gate", gate_model, model_dir, manifest_file, settings, timings=timings)
    summary: dict[str, Any] = {}
    if publish and decision["publish"]:
        # publish_model switches the model and its online features together, under the lock
        summary = run_stage("publish", publish_version, model_dir, settings,
                            decision["champion_version"], mapper, timings=timings)
    else:
        why = decision["reason"] if not decision["publish"] else "publishing not requested"
        note_champion_kept(Path(model_dir).name, why)
    return PipelineResult(run_id=run_id or version, version=Path(model_dir).name,
                          model_dir=str(model_dir),
                          metrics=model_metadata(Path(model_dir)).get("metrics", {}),
                          publish=summary,
                          published=bool(summary) and not summary.get("superseded"),
                          gate=decision, timings=timings, runner=runner)


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
        run_id: names the validation report, the feature snapshot and the model version
            (default: new).
        publish: False registers the model without touching what is served.
    """
    settings = load_settings()
    run_id = run_id or new_run_id()
    logger = get_run_logger()
    logger.info("run %s: input %s, data dir %s, MongoDB db %s", run_id, input_dir,
                settings.data_dir, settings.mongodb_db)
    timings: dict[str, float] = {}
    try:
        with open_runner(settings) as runner:  # an unreachable cluster fails here, first
            logger.info("run %s: %s", run_id, runner.description)
            run_stage("validate", validate_batch, Path(input_dir), run_id, settings,
                      runner.mapper, timings=timings)
            manifest_file = features_as_of(None, run_id, settings, mapper=runner.mapper,
                                           timings=timings)
            result = train_score_gate_publish(manifest_file, run_id, settings,
                                              publish=publish, run_id=run_id,
                                              mapper=runner.mapper,
                                              runner=runner.description, timings=timings)
    except (StageFailed, DaskClusterError) as failure:
        return Failed(message=str(failure))
    if not result.published:
        logger.info("run %s: champion kept; model %s registered only", run_id, result.version)
    return result
