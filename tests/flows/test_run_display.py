"""How runs look in Prefect (issue 16), read back from Prefect's API in its test harness: run
names that say what each task does, tidy artifacts, stage timings, and failures as one line
(state messages and logs) without engine internals."""

from __future__ import annotations

import json
import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from uuid import UUID

import pytest
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import (
    ArtifactFilter,
    ArtifactFilterFlowRunId,
    FlowRunFilter,
    FlowRunFilterId,
    LogFilter,
    LogFilterFlowRunId,
)
from prefect.logging.handlers import APILogHandler

from flows.reporting import MAX_LOG_CHARS
from recsys.datagen import generate_batch

pytestmark = pytest.mark.integration

BROKEN = Path(__file__).resolve().parents[1] / "ingest" / "broken_batches" / "rating_out_of_range"


def _broken_copy(folder: Path) -> Path:
    shutil.copytree(BROKEN, folder, ignore=shutil.ignore_patterns("expected.json"))
    return folder


def _read(flow_run_id: UUID) -> dict[str, Any]:
    """Task runs, logs (of the run and its tasks) and artifacts of one flow run."""
    APILogHandler().flush()  # logs go to the API in the background; wait for them
    with get_client(sync_client=True) as client:
        runs = FlowRunFilter(id=FlowRunFilterId(any_=[flow_run_id]))
        return {
            "tasks": client.read_task_runs(flow_run_filter=runs),
            "logs": client.read_logs(LogFilter(flow_run_id=LogFilterFlowRunId(
                any_=[flow_run_id]))),
            "artifacts": {a.key: a for a in client.read_artifacts(
                artifact_filter=ArtifactFilter(flow_run_id=ArtifactFilterFlowRunId(
                    any_=[flow_run_id])))},
        }


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory, mongo_uri: str,
         prefect_harness: None) -> Iterator[dict[str, Any]]:
    """One good pipeline run, then a broken batch through the pipeline and through the
    incoming-batches flow (a subflow), with what Prefect's API holds about each."""
    from flows.incoming import process_incoming
    from flows.pipeline import batch_pipeline

    root = tmp_path_factory.mktemp("display")
    env = {"MONGODB_URI": mongo_uri, "MONGODB_DB": f"test_{uuid.uuid4().hex[:12]}",
           "RECSYS_DATA_DIR": str(root / "data"), "RECSYS_TOP_N": "10",
           "RECSYS_ITERATIONS": "3", "RECSYS_VALIDATION_DATA_DOCS": "false"}
    with pytest.MonkeyPatch.context() as mp:
        for key, value in env.items():
            mp.setenv(key, value)
        batch = generate_batch(root / "good", users=120, items=60, interactions=3000, seed=5)
        good = batch_pipeline(str(batch.directory), run_id="display-1", return_state=True)
        broken = batch_pipeline(str(_broken_copy(root / "broken")), run_id="display-2",
                                return_state=True)
        _broken_copy(root / "incoming" / "b1")
        incoming = process_incoming(str(root / "incoming"), return_state=True)
        yield {name: {"state": state, **_read(state.state_details.flow_run_id)}
               for name, state in (("good", good), ("broken", broken),
                                   ("incoming", incoming))}


def test_task_runs_are_named_for_what_they_do(runs: dict[str, Any]) -> None:
    good = runs["good"]
    assert good["state"].is_completed(), good["state"].message
    names = {t.name for t in good["tasks"]}
    assert {"build features display-1 (all events)", "train model display-1",
            "score model display-1", "gate model display-1 against the champion",
            "publish model display-1"} <= names
    assert any(n.startswith("validate and store ") for n in names)
    assert not any("None" in n for n in names), names


def test_the_result_has_stage_timings(runs: dict[str, Any]) -> None:
    timings = runs["good"]["state"].result().timings
    assert list(timings) == ["validate", "features", "train", "score", "gate", "publish"]
    assert all(seconds >= 0 for seconds in timings.values())


def test_artifacts_are_tidy_tables(runs: dict[str, Any]) -> None:
    artifacts = runs["good"]["artifacts"]
    metrics = json.loads(artifacts["training-metrics"].data)
    assert {row["model"] for row in metrics} == {"als", "popular"}
    for row in metrics:
        assert isinstance(row["users"], int)
        for value in row.values():
            if isinstance(value, float):  # at most 4 significant digits
                assert len(f"{value:.10g}".lstrip("-0.").replace(".", "")) <= 4, row
    for key in ("gate-decision", "publish-summary"):
        markdown = artifacts[key].data
        assert not any(c in markdown for c in "{}'"), markdown  # no dict/list reprs
    assert "| counts.users | 120 |" in artifacts["publish-summary"].data


def _assert_tidy_logs(logs: list[Any]) -> None:
    for entry in logs:
        assert len(entry.message) <= MAX_LOG_CHARS + 40, entry.message[:200]
        assert "\n" not in entry.message, entry.message
        assert "NoneType: None" not in entry.message
        assert "Traceback" not in entry.message and "FailedRun" not in entry.message


def test_every_log_line_is_short_and_single(runs: dict[str, Any]) -> None:
    for run in runs.values():
        assert run["logs"]
        _assert_tidy_logs(run["logs"])


def test_a_failed_run_says_why_in_one_line(runs: dict[str, Any]) -> None:
    broken = runs["broken"]
    state = broken["state"]
    assert state.is_failed()
    assert "\n" not in state.message
    assert state.message.startswith("stage 'validate' failed: 1 expectation(s) failed: "), \
        state.message
    assert "column 'rating', rule 'rating_in_range'" in state.message
    assert "batch quarantined in " in state.message
    (task,) = [t for t in broken["tasks"] if t.name.startswith("validate and store ")]
    assert task.state.is_failed() and "\n" not in task.state.message
    errors = [entry.message for entry in broken["logs"] if entry.level >= 40]
    # the failure is logged once, by the task, as one line
    assert len(errors) == 1 and errors[0].startswith("Finished in state Failed("), errors


def test_a_failed_subflow_reaches_its_parent_in_one_line(runs: dict[str, Any]) -> None:
    state = runs["incoming"]["state"]
    assert state.is_failed()
    assert state.message.startswith("batch b1: stage 'validate' failed: "), state.message
    assert "\n" not in state.message and "\\n" not in state.message
