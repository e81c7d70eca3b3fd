"""Daily incremental run: every new batch folder in `<data_dir>/incoming/` goes through the pipeline once.

A batch folder is "new" until the ledger `<data_dir>/runs/incoming.json` records it (by folder
name, with its run id, outcome and message). Folders are processed oldest name first, each by the
`batch-pipeline` subflow; a failed batch is recorded too (it is quarantined by validation), so it
is not retried on every schedule -- drop a corrected copy under a new name instead. Folder names
starting with '.' or '_' are ignored, which lets producers write under a temporary name and
rename when complete. Each batch's run opens its own task runner (`flows/runner.py`): with
RECSYS_TASK_RUNNER=dask it connects to the cluster, or starts and closes a LocalCluster, itself.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from prefect import flow, get_run_logger
from prefect.artifacts import create_table_artifact
from prefect.states import Failed, State

from flows.ledger import incoming_root, ledger_path
from flows.pipeline import PipelineResult, batch_pipeline
from flows.reporting import report_run_outcome, table_rows
from flows.tasks import find_new_batches, record_batch
from recsys.ids import new_run_id
from recsys.settings import load_settings


@flow(name="incoming-batches", on_completion=[report_run_outcome],
      on_failure=[report_run_outcome],
      flow_run_name="incoming batches")
def process_incoming(incoming_dir: str | None = None, max_batches: int | None = None,
                     publish: bool = True) -> list[dict[str, Any]] | State:
    """Run the batch pipeline once for every new folder in the incoming folder.

    Args:
        incoming_dir: where batch folders arrive (default `<data_dir>/incoming`).
        max_batches: process at most this many per run (default: all).
        publish: passed to each pipeline run (False registers models only).

    Returns:
        One row per processed batch; the run is Failed when any batch failed, naming each.
    """
    settings = load_settings()
    root = Path(incoming_dir) if incoming_dir else incoming_root(settings)
    ledger_file = ledger_path(settings)
    batches = find_new_batches(root, ledger_file)
    if max_batches is not None:
        batches = batches[:max_batches]
    logger = get_run_logger()
    logger.info("%d new batch folder(s) in %s", len(batches), root)
    rows: list[dict[str, Any]] = []
    for batch in batches:
        run_id = new_run_id()
        state = batch_pipeline(str(batch), run_id=run_id, publish=publish, return_state=True)
        if state.is_completed():
            result: PipelineResult = state.result()
            status = "published" if result.published else "champion kept"
            message = f"model {result.version}"
        else:
            status, message = "failed", state.message or "unknown error"
        record_batch(ledger_file, batch.name, run_id, status, message)
        rows.append({"batch": batch.name, "run_id": run_id, "status": status,
                     "message": message})
    if rows:
        create_table_artifact(key="incoming-batches", table=table_rows(rows),
                              description=f"Batches processed from {root}")
    failed = [row for row in rows if row["status"] == "failed"]
    if failed:
        return Failed(message="; ".join(f"batch {row['batch']}: {row['message']}"
                                        for row in failed))
    return rows
