"""Weekly full retrain: features as of now from the raw store -> train with hyperparameter search
-> score -> champion/challenger gate -> publish.
"""

from __future__ import annotations

from datetime import datetime

from prefect import flow, get_run_logger
from prefect.runtime import flow_run
from prefect.states import Failed, State

from flows.pipeline import PipelineResult, features_as_of, train_score_gate_publish
from flows.reporting import as_of_label, report_run_outcome
from flows.runner import open_runner
from recsys.errors import DaskClusterError, StageFailed
from recsys.ids import new_run_id
from recsys.settings import load_settings


def retrain_run_name() -> str:
    """``retrain (all events)`` or ``retrain (as of ...)``, never "as of None"."""
    return f"retrain ({as_of_label(flow_run.parameters.get('as_of'))})"


@flow(name="weekly-retrain", on_completion=[report_run_outcome],
      on_failure=[report_run_outcome],
      flow_run_name=retrain_run_name)
def weekly_retrain(search: bool = True, publish: bool = True,
                   as_of: str | None = None) -> PipelineResult | State:
    """Rebuild features from the raw store, retrain (with search), gate and publish.

    Args:
        search: run the hyperparameter search before the final fit.
        publish: False registers the model without touching what is served.
        as_of: ISO-8601 cut-off for the events used (default: everything stored).
    """
    settings = load_settings()
    run_id = "retrain-" + new_run_id()
    if as_of:
        datetime.fromisoformat(as_of)  # a malformed parameter fails before any work
    get_run_logger().info("retrain %s: as of %s, search=%s, publish=%s", run_id,
                          as_of or "now", search, publish)
    try:
        with open_runner(settings) as runner:  # an unreachable cluster fails here, first
            get_run_logger().info("retrain %s: %s", run_id, runner.description)
            manifest_file = features_as_of(as_of, run_id, settings, mapper=runner.mapper)
            return train_score_gate_publish(manifest_file, run_id, settings, search=search,
                                            publish=publish, run_id=run_id,
                                            mapper=runner.mapper, runner=runner.description)
    except (StageFailed, DaskClusterError) as failure:
        return Failed(message=str(failure))
