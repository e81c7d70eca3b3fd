"""One whole pipeline run through the flow's entry point, with settings from the environment.

`python -m bench.phases.run_pipeline RUNNER WORK SIZE_JSON URI` runs `flows.pipeline.
batch_pipeline` on the work folder's generated batch exactly as `recsys pipeline` does (a
temporary Prefect API server for the run, `load_settings()` from the environment: the caller
sets `RECSYS_TASK_RUNNER`, `RECSYS_DATA_DIR`, `MONGODB_DB`, ...), and reports the flow's
per-stage timings (`PipelineResult.timings`). Used by `bench.dask_scaling`; RUNNER only labels
the result and must agree with the settings.
"""

from __future__ import annotations

import os
import resource
import time
from functools import partial
from pathlib import Path
from typing import Any

from bench.workspace import RUN_ID, Size, batch_dir, phase_main
from flows.local_server import local_prefect_api
from flows.pipeline import PipelineResult, batch_pipeline
from recsys.settings import load_settings


def _children_peak_rss_mib() -> float:
    """The largest peak RSS among this process's finished descendants (`ru_maxrss` of
    RUSAGE_CHILDREN): the Prefect server, Dask's nannies and workers once they were reaped."""
    return round(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024, 1)


def run(work: Path, size: Size, uri: str, *, runner: str) -> dict[str, Any]:
    """Run the pipeline flow once on the batch; return its wall time and per-stage timings.

    Raises:
        RuntimeError: the settings name another runner than `runner`, or the run failed.
    """
    load = os.getloadavg()[0]
    settings = load_settings()
    if settings.task_runner != runner:
        raise RuntimeError(f"asked for the {runner} runner but RECSYS_TASK_RUNNER is "
                           f"{settings.task_runner!r}")
    with local_prefect_api():
        started = time.perf_counter()
        state = batch_pipeline(str(batch_dir(work)), run_id=RUN_ID, return_state=True)
        seconds = time.perf_counter() - started
    if not state.is_completed():
        raise RuntimeError(f"the {runner} run failed: {state.message}")
    result: PipelineResult = state.result()
    return {"seconds": seconds, "load_average_at_start": load, "runner": settings.task_runner,
            "dask_address": settings.dask_address, "dask_workers": settings.dask_workers,
            "partitions": settings.partition_count, "where": result.runner,
            "timings": result.timings,
            "version": result.version, "published": result.published,
            "als_metrics": result.metrics.get("als", {}),
            "children_peak_rss_mib": _children_peak_rss_mib()}


PHASES = {runner: partial(run, runner=runner) for runner in ("local", "dask")}

if __name__ == "__main__":
    phase_main(PHASES)
