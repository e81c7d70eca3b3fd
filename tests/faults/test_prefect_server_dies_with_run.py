"""Regression (issue 13): the temporary Prefect server of a local run outlived the run.

`recsys pipeline` without PREFECT_API_URL used Prefect's own temporary server, which is stopped
from an atexit hook; after `kill -9` of the run it stayed up, reparented to PID 1. The run now
starts the server itself as a child the kernel kills with its parent (flows/local_server.py).
"""

from __future__ import annotations

import os
import re
import signal
from pathlib import Path

import pytest
from prefect.settings import PREFECT_API_URL, temporary_settings

from flows.local_server import LocalPrefectServer, dies_with_parent_supported, local_prefect_api
from tests.faults.conftest import cli_env, kill_session, start_cli, wait_session_gone

pytestmark = [pytest.mark.faults, pytest.mark.integration, pytest.mark.slow]  # ~25 s: runs a pipeline


@pytest.mark.skipif(not dies_with_parent_supported(), reason="PR_SET_PDEATHSIG is Linux only")
def test_kill_9_of_a_run_takes_its_prefect_server_with_it(
    fault_batch: Path, mongo_uri: str, mongo_db_name: str, tmp_path: Path
) -> None:
    env = cli_env(mongo_uri=mongo_uri, db=mongo_db_name, data_dir=tmp_path / "data",
                  prefect_home=tmp_path / "prefect-home", prefect_api=None)
    run = start_cli(["pipeline", "--input", str(fault_batch)], env, tmp_path / "run.log")
    try:
        run.wait_for("Beginning flow run")  # the run's server is up and in use
        started = re.search(r"started a local Prefect server on (\S+) \(pid (\d+)", run.output())
        assert started, run.output()
        server_pid = int(started.group(2))
        assert server_pid in wait_session_gone(run.pid, timeout=0)  # alive, in the run's session

        os.kill(run.pid, signal.SIGKILL)
        assert run.wait(30) == -signal.SIGKILL
        left = wait_session_gone(run.pid)
        assert not left, f"left running after kill -9 of the run: {left}"
    finally:
        kill_session(run.pid)


def test_a_configured_prefect_api_is_used_and_nothing_is_started(
    monkeypatch: pytest.MonkeyPatch
) -> None:
    def no_server(self: LocalPrefectServer) -> str:
        raise AssertionError("started a server although PREFECT_API_URL is set")

    monkeypatch.setattr(LocalPrefectServer, "start", no_server)
    with temporary_settings(updates={PREFECT_API_URL: "http://127.0.0.1:9/api"}):
        with local_prefect_api() as api_url:
            assert api_url == "http://127.0.0.1:9/api"
