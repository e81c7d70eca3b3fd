"""Fixtures of the fault-injection suite: one generated batch, one Prefect server, and helpers
that run `recsys pipeline` in a process session of its own and look at what it left behind."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from pymongo import MongoClient

from flows.local_server import LocalPrefectServer
from recsys.datagen import generate_batch
from recsys.settings import Settings
from serving.store import MongoServingStore, open_store
from serving.version_writer import write_payload_version
from tests.serving.payloads import make_payload

REPO = Path(__file__).resolve().parents[2]
BASELINE = "v0-before-the-faults"
STAGES = ("validate", "features", "train", "score", "publish")


@pytest.fixture(scope="session")
def fault_batch(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The one small generated batch every run of the suite reads."""
    return generate_batch(tmp_path_factory.mktemp("batch"), users=200, items=100,
                          interactions=5000, seed=11).directory


@pytest.fixture(scope="session")
def prefect_home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """PREFECT_HOME of every run: the suite never touches ~/.prefect."""
    return tmp_path_factory.mktemp("prefect-home")


@pytest.fixture(scope="session")
def prefect_api(prefect_home: Path) -> Iterator[str]:
    """One Prefect API server for the runs of the suite (its database lives in `prefect_home`)."""
    with pytest.MonkeyPatch.context() as env:
        env.setenv("PREFECT_HOME", str(prefect_home))
        env.setenv("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
        server = LocalPrefectServer(startup_timeout_s=240)
        api_url = server.start()
    yield api_url
    server.stop()


def cli_env(*, mongo_uri: str, db: str, data_dir: Path, prefect_home: Path,
            prefect_api: str | None, **settings: str) -> dict[str, str]:
    """The environment of a `recsys` process: this session's MongoDB, data dir and Prefect.

    `prefect_api=None` lets the run start its own Prefect server.
    """
    env = {key: value for key, value in os.environ.items()
           if not key.startswith(("RECSYS_", "MONGODB_", "PREFECT_"))}
    env.update({"MONGODB_URI": mongo_uri, "MONGODB_DB": db, "RECSYS_DATA_DIR": str(data_dir),
                "RECSYS_TOP_N": "20", "RECSYS_ITERATIONS": "5", "RECSYS_EXPLAIN_N": "0",
                "PREFECT_HOME": str(prefect_home), "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
                "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "240",
                "GX_ANALYTICS_ENABLED": "False", "PYTHONUNBUFFERED": "1"})
    if prefect_api:
        env["PREFECT_API_URL"] = prefect_api
    env.update({f"RECSYS_{key.upper()}": value for key, value in settings.items()})
    return env


@dataclass
class Run:
    """A `recsys` process started by `start_cli`; its session id is its pid."""

    proc: subprocess.Popen[bytes]
    log: Path

    @property
    def pid(self) -> int:
        return self.proc.pid

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def wait(self, timeout: float = 300) -> int:
        return self.proc.wait(timeout)

    def wait_for(self, text: str, timeout: float = 300) -> None:
        """Poll the output until `text` appears (fail if the process ends first)."""
        deadline = time.monotonic() + timeout
        while text not in self.output():
            assert self.proc.poll() is None, f"ended before {text!r}:\n{self.output()[-3000:]}"
            assert time.monotonic() < deadline, f"no {text!r} within {timeout}s"
            time.sleep(0.05)

    def error_lines(self) -> list[str]:
        """The CLI's own error lines (`error: ...`)."""
        return [line for line in self.output().splitlines() if line.startswith("error: ")]


def start_cli(args: list[str], env: dict[str, str], log: Path, *, fault: str | None = None
              ) -> Run:
    """Start `recsys ARGS` (with `fault` injected, see tests/faults/inject.py) in its own
    session, output to `log`."""
    module = "tests.faults.inject" if fault else "recsys"
    if fault:
        env = {**env, "FAULT": fault}
    with log.open("wb") as out:
        proc = subprocess.Popen([sys.executable, "-m", module, *args], cwd=REPO, env=env,
                                stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                start_new_session=True)
    return Run(proc, log)


def session_processes(session: int) -> dict[int, str]:
    """pid -> command line of the live (not zombie) processes of process session `session`."""
    found = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:  # it ended while we looked
            continue
        state, _ppid, _pgrp, sid = stat.rsplit(")", 1)[1].split()[:4]
        if int(sid) == session and state != "Z":
            found[int(entry.name)] = cmdline.strip()
    return found


def wait_session_gone(session: int, timeout: float = 15) -> dict[int, str]:
    """Wait until session `session` has no live process; return what is still alive then."""
    deadline = time.monotonic() + timeout
    while (left := session_processes(session)) and time.monotonic() < deadline:
        time.sleep(0.2)
    return left


def kill_session(session: int) -> None:
    """SIGKILL whatever a test's own run left in its session (cleanup only)."""
    for pid in session_processes(session):
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def serve_baseline(mongo_uri: str, db: str) -> None:
    """Serve a hand-made version, so each fault can show that what was served stays served."""
    with MongoClient(mongo_uri, serverSelectionTimeoutMS=10_000, tz_aware=True) as client:
        store = MongoServingStore(client[db])
        write_payload_version(store.db, make_payload(BASELINE))
        store.activate(BASELINE)


def served(mongo_uri: str, db: str) -> dict[str, Any]:
    """What is served, verified (`verify_active`: active, ready, every collection present)."""
    with open_store(Settings(mongodb_uri=mongo_uri, mongodb_db=db)) as store:
        return store.verify_active()
