"""The benchmark runner's sizes and the layout of its work folder, shared by its phases.

A run works in one folder: the generated batch in `batch/`, the pipeline's data dir in `data/`
(the same layout a deployment has), MongoDB's files in `mongo/` when it is embedded, the
phases' log in `bench.log`, and in `outputs.json` what each stage function returned (the paths
the next stage reads), as a flow hands one task's result to the next.
"""

from __future__ import annotations

import json
import logging
import os
import platform
import shutil
import sys
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from bench.child_process import report
from recsys.mongo_server import EmbeddedMongo, free_port
from recsys.settings import Settings, load_settings

SEED = 42
RUN_ID = "bench"  # the run id, snapshot id and model version of the measured run
DB_NAME = "recsys_bench"
OUTPUTS_FILE = "outputs.json"  # in the work folder: what each stage returned
PIPELINE_STAGES = ("validation", "features", "training", "publish")
STAGES = (*PIPELINE_STAGES, "serving")


@dataclass(frozen=True)
class Size:
    """One benchmark size: the generated batch's shape and the serving measurement's length."""

    name: str
    interactions: int
    users: int
    items: int
    serving_seconds: int  # per load measurement

    def to_json(self) -> str:
        """The size as one JSON argument for a phase's child process."""
        return json.dumps(asdict(self), sort_keys=True)


SIZES = {
    "small": Size("small", 100_000, 5_000, 2_000, 5),
    "medium": Size("medium", 5_000_000, 100_000, 20_000, 10),
    "large": Size("large", 50_000_000, 1_000_000, 100_000, 10),
}

Phase = Callable[[Path, Size, str], dict[str, Any]]


def bench_settings(work: Path, uri: str) -> Settings:
    """The pipeline's settings for a run in `work` against the MongoDB at `uri`.

    The bench database keeps the fewest versions allowed (2); Data Docs stay on, as the pipeline
    runs them.
    """
    return load_settings(data_dir=work / "data", mongodb_uri=uri, mongodb_db=DB_NAME,
                         keep_versions=2)


@contextmanager
def work_folder(work: Path | None, *, prefix: str, keep: bool = False) -> Iterator[Path]:
    """`work` (created when missing), or a fresh temp folder removed afterwards unless `keep`."""
    if work is not None:
        work = Path(work)
        work.mkdir(parents=True, exist_ok=True)
        yield work
        return
    temp = Path(tempfile.mkdtemp(prefix=prefix))
    try:
        yield temp
    finally:
        if not keep:
            shutil.rmtree(temp, ignore_errors=True)


@contextmanager
def mongodb(work: Path, uri: str | None) -> Iterator[str]:
    """`uri` as given, or the URI of an embedded secantusd-py under `<work>/mongo` that runs for
    the block's duration."""
    if uri is not None:
        yield uri
        return
    server = EmbeddedMongo(state_dir=work / "mongo", port=free_port(),
                           storage_path=work / "mongo" / "db")
    started = server.start(wait_seconds=bench_settings(work, "").mongo_start_timeout_s)
    try:
        yield started.uri
    finally:
        server.stop()


def machine_info() -> dict[str, Any]:
    """CPUs, memory, platform and the load average now: the context every result needs."""
    meminfo = Path("/proc/meminfo").read_text().splitlines()
    mem_kb = next(int(line.split()[1]) for line in meminfo if line.startswith("MemTotal:"))
    return {"cpus": os.cpu_count(), "memory_gib": round(mem_kb / 2**20, 1),
            "platform": platform.platform(), "python": platform.python_version(),
            "load_average_at_start": list(os.getloadavg())}


def batch_dir(work: Path) -> Path:
    """Where the generated batch lies."""
    return work / "batch"


def record_output(work: Path, name: str, value: Any) -> None:
    """Keep what a stage function returned (paths) for the phases after it, as a flow would."""
    path = work / OUTPUTS_FILE
    outputs = json.loads(path.read_text()) if path.exists() else {}
    outputs[name] = value
    path.write_text(json.dumps(outputs, indent=2, default=str) + "\n")


def read_output(work: Path, name: str) -> Any:
    """What an earlier phase recorded under `name`.

    Raises:
        KeyError: no earlier phase recorded it (run the stages in order).
    """
    path = work / OUTPUTS_FILE
    outputs = json.loads(path.read_text()) if path.exists() else {}
    if name not in outputs:
        raise KeyError(f"{name!r} not recorded in {path}: run the stage that produces it first")
    return outputs[name]


def phase_main(phases: dict[str, Phase]) -> None:
    """A phase module's child-process entry: `python -m <module> SIDE WORK SIZE_JSON URI`.

    Runs `phases[SIDE]` and prints its result, with the process's peak RSS, as one JSON line.
    """
    side, work, size_json, uri = sys.argv[1:5]
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    for name in ("ingest", "features", "training", "serving", "bench"):
        logging.getLogger(name).setLevel(logging.INFO)
    report(phases[side](Path(work), Size(**json.loads(size_json)), uri))
