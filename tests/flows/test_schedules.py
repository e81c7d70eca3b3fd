"""`make prefect-up` / `make prefect-down` on a real Prefect server: schedules fire, nothing is left.

Runs the real Makefile targets in isolation (a free PREFECT_PORT, RECSYS_DATA_DIR and HOME under
tmp, the test's own interpreter's venv, the install step skipped) with the scheduler's loop at one
second. Regression tests for two bugs:
- Prefect 3.8.8's scheduler under SQLAlchemy 2.1.x failed on every loop ("Can't evaluate bulk DML
  statement" in schedule_deployments): deployments listed active schedules and never got an
  upcoming run. Reading the deployments back cannot see that; only the runs the scheduler creates.
- `make prefect-down` printed "stopped" while the worker kept running: Prefect's worker turns a
  first SIGTERM into a SIGINT to itself and survives it.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from recsys.mongo_server import free_port
from tests.flows.prefect_server import (
    REPO,
    declared_deployments,
    healthy,
    read_deployments,
    scheduled_runs,
)

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(not Path("/proc/self/stat").exists() or not all(
        shutil.which(tool) for tool in ("make", "curl", "setsid")),
        reason="needs Linux /proc, make, curl and setsid"),
]

SCHEDULE_WAIT_S = 60


@dataclass(frozen=True)
class LocalPrefect:
    env: dict[str, str]
    api_url: str
    run_dir: Path  # <data dir>/prefect: pids, logs, PREFECT_HOME
    home: Path  # HOME of every command, to show that ~/.prefect stays untouched


def _make(local: LocalPrefect, target: str, timeout: float) -> subprocess.CompletedProcess[str]:
    venv = Path(sys.prefix)
    # VENV: this interpreter's environment; -o: never run the install step from a test.
    return subprocess.run(["make", "--no-print-directory", "-o", str(venv / ".installed"),
                           f"VENV={venv}", target], cwd=REPO, env=local.env, capture_output=True,
                          text=True, timeout=timeout)


def _pid(local: LocalPrefect, name: str) -> int:
    return int((local.run_dir / f"{name}.pid").read_text())


def _group(pgid: int) -> set[int]:
    """Processes of the process group `pgid` that are running (zombies aside)."""
    members = set()
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if int(fields[2]) == pgid and fields[0] != "Z":  # state, ppid, pgrp, ...
            members.add(int(stat.parent.name))
    return members


def _log_tail(local: LocalPrefect, name: str, lines: int = 40) -> str:
    path = local.run_dir / f"{name}.log"
    return "\n".join(path.read_text().splitlines()[-lines:]) if path.exists() else ""


@pytest.fixture(scope="module")
def local_prefect(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalPrefect]:
    data_dir = tmp_path_factory.mktemp("prefect-data")
    home = tmp_path_factory.mktemp("home")
    port = free_port()
    # Nothing inherited from the caller's Prefect settings or from an outer `make test`.
    env = {key: value for key, value in os.environ.items()
           if not key.startswith("PREFECT_")
           and key not in {"MAKEFLAGS", "MFLAGS", "MAKELEVEL", "DATA_DIR"}}
    env.update(HOME=str(home), RECSYS_DATA_DIR=str(data_dir), PREFECT_PORT=str(port),
               PREFECT_SERVER_SERVICES_SCHEDULER_LOOP_SECONDS="1", PREFECT_UI_ENABLED="false",
               PREFECT_LOGGING_LEVEL="WARNING")
    local = LocalPrefect(env=env, api_url=f"http://127.0.0.1:{port}/api",
                         run_dir=data_dir / "prefect", home=home)
    try:
        up = _make(local, "prefect-up", timeout=300)
        assert up.returncode == 0, (f"make prefect-up:\n{up.stdout}\n{up.stderr}\n"
                                    f"{_log_tail(local, 'server')}")
        yield local
    finally:
        _make(local, "prefect-down", timeout=120)
        for name in ("worker", "server"):  # whatever prefect-down left, so no test leaks it
            pidfile = local.run_dir / f"{name}.pid"
            if pidfile.exists() and _group(pid := int(pidfile.read_text())):
                os.killpg(pid, signal.SIGKILL)


def test_scheduler_creates_upcoming_runs_for_every_active_schedule(
        local_prefect: LocalPrefect) -> None:
    declared = {spec["name"]: [s for s in spec.get("schedules") or [] if s.get("active", True)]
                for spec in declared_deployments()}
    active = {name for name, schedules in declared.items() if schedules}
    assert active == {"daily-incremental", "weekly-retrain", "maintenance"}
    assert {d.name for d in read_deployments(local_prefect.api_url)} == set(declared)

    deadline = time.monotonic() + SCHEDULE_WAIT_S
    while True:
        runs = scheduled_runs(local_prefect.api_url)
        if all(runs[name] for name in active) or time.monotonic() > deadline:
            break
        time.sleep(1)
    missing = sorted(name for name in active if not runs[name])
    assert not missing, (f"no upcoming run after {SCHEDULE_WAIT_S}s for {missing}; server log:\n"
                         f"{_log_tail(local_prefect, 'server')}")
    for name in set(declared) - active:
        assert runs[name] == [], f"{name} has no active schedule but got runs"
    for name in active:
        (schedule,) = declared[name]
        minute, hour = (int(field) for field in schedule["cron"].split()[:2])
        zone = ZoneInfo(schedule["timezone"])
        for run in runs[name]:
            start = run.expected_start_time.astimezone(zone)
            assert (start.hour, start.minute) == (hour, minute), (name, start)
            assert start > datetime.now(zone)


def test_prefect_home_is_under_the_data_dir(local_prefect: LocalPrefect) -> None:
    assert (local_prefect.run_dir / "home" / "prefect.db").is_file()
    assert not (local_prefect.home / ".prefect").exists()


def test_prefect_down_stops_everything_prefect_up_started(local_prefect: LocalPrefect) -> None:
    groups = {name: _pid(local_prefect, name) for name in ("worker", "server")}
    for name, pid in groups.items():
        assert pid in _group(pid), f"{name} is not running:\n{_log_tail(local_prefect, name)}"

    down = _make(local_prefect, "prefect-down", timeout=120)
    assert down.returncode == 0, f"{down.stdout}\n{down.stderr}"
    for name, pid in groups.items():
        assert f"stopped Prefect {name} (pid {pid}" in down.stdout
        assert _group(pid) == set(), f"{name}: processes left after prefect-down"
        assert not (local_prefect.run_dir / f"{name}.pid").exists()
    assert not healthy(local_prefect.api_url)

    again = _make(local_prefect, "prefect-down", timeout=60)
    assert (again.returncode, again.stdout) == (0, "")
