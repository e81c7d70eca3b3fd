"""A Prefect API server for one local run, that dies with the run even when the run is SIGKILLed.

Without `PREFECT_API_URL`, Prefect starts a temporary API server itself (a uvicorn subprocess)
and stops it from an `atexit` hook. A run killed by SIGKILL (the OOM killer, `kill -9`, a
container stop after its grace period) never runs that hook, so its server was left running,
reparented to PID 1, holding its port and the Prefect database.

`local_prefect_api()` starts the same server (same app, same settings, UI and background
services off) as a child that the kernel kills when its parent dies (Linux
`prctl(PR_SET_PDEATHSIG)`), points Prefect at it for the run, and stops it afterwards. Where
PDEATHSIG does not exist, or when the user points Prefect at a server of their own, Prefect
behaves as it always did.
"""

from __future__ import annotations

import ctypes
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import httpx
from prefect.context import refresh_global_settings_context
from prefect.events.worker import EventsWorker
from prefect.logging.handlers import APILogWorker
from prefect.settings import (
    PREFECT_API_URL,
    PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS,
    get_current_settings,
)

from recsys.errors import PrefectServerError
from recsys.mongo_server import free_port

logger = logging.getLogger(__name__)

_PR_SET_PDEATHSIG = 1  # from <linux/prctl.h>
_STARTUP_FAILURE = 3  # uvicorn's exit code when it cannot start (e.g. the port was taken)
_PORT_ATTEMPTS = 5
_DRAIN_TIMEOUT_S = 10.0
# What Prefect's own temporary server runs with: no UI, no background services.
_SERVER_ENV = {"PREFECT_UI_ENABLED": "0", "PREFECT__SERVER_EPHEMERAL": "1",
               "PREFECT__SERVER_FINAL": "1"}


def _libc_prctl() -> Callable[..., int] | None:
    if not sys.platform.startswith("linux"):
        return None
    try:
        return ctypes.CDLL(None, use_errno=True).prctl  # type: ignore[no-any-return]
    except (OSError, AttributeError):
        return None


# Resolved once in the parent, so the child only makes one foreign call between fork and exec.
_PRCTL = _libc_prctl()


def dies_with_parent_supported() -> bool:
    """True where a child can ask the kernel to kill it when its parent dies (Linux)."""
    return _PRCTL is not None


def _die_with(parent_pid: int) -> Callable[[], None]:
    """A `preexec_fn` that makes the child receive SIGKILL when `parent_pid` dies."""
    prctl = _PRCTL
    assert prctl is not None

    def preexec() -> None:
        if prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0) != 0:
            os._exit(_STARTUP_FAILURE + 1)
        if os.getppid() != parent_pid:  # the parent died before prctl took effect
            os._exit(_STARTUP_FAILURE + 1)

    return preexec


class LocalPrefectServer:
    """Prefect's API server (uvicorn) as a child process that is killed when its parent dies.

    Start and stop it from the main thread: the kernel sends the death signal when the *thread*
    that started the child exits, so a short-lived thread would take the server with it.

    Args:
        startup_timeout_s: how long to wait for its health check to answer.
        host: bind address.
    """

    def __init__(self, *, startup_timeout_s: float, host: str = "127.0.0.1") -> None:
        if not dies_with_parent_supported():
            raise PrefectServerError("a server that dies with its run needs Linux (PDEATHSIG)")
        self.startup_timeout_s = startup_timeout_s
        self.host = host
        self.port: int | None = None
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def api_url(self) -> str:
        """The API base URL (what `PREFECT_API_URL` takes)."""
        return f"http://{self.host}:{self.port}/api"

    def _spawn(self, port: int) -> subprocess.Popen[bytes]:
        argv = [sys.executable, "-m", "uvicorn", "--factory",
                "prefect.server.api.server:create_app", "--host", self.host, "--port",
                str(port), "--log-level", "error", "--lifespan", "on"]
        env = {**os.environ, **_SERVER_ENV,
               **get_current_settings().to_environment_variables(exclude_unset=True)}
        env.pop("PREFECT_API_URL", None)  # the server must not think it is a client of itself
        # A process group of its own: Ctrl-C in a terminal interrupts the run, which then
        # reports its end to a server that is still up, and stops it afterwards.
        return subprocess.Popen(argv, env=env, stdin=subprocess.DEVNULL,  # noqa: S603
                                process_group=0,
                                preexec_fn=_die_with(os.getpid()))  # noqa: PLW1509

    def start(self) -> str:
        """Start the server and wait for its health check; returns the API URL.

        Raises:
            PrefectServerError: it exited, or did not answer within `startup_timeout_s`.
        """
        deadline = time.monotonic() + self.startup_timeout_s
        with httpx.Client(timeout=2) as client:
            for _ in range(_PORT_ATTEMPTS):
                self.port = free_port(self.host)
                self.process = self._spawn(self.port)
                logger.info("started a local Prefect server on %s (pid %d; it stops with this "
                            "run)", self.api_url, self.process.pid)
                while (code := self.process.poll()) is None:
                    try:
                        if client.get(f"{self.api_url}/health").status_code == 200:
                            return self.api_url
                    except httpx.TransportError:
                        pass
                    if time.monotonic() > deadline:
                        self.stop()
                        raise PrefectServerError(
                            f"the local Prefect server did not answer within "
                            f"{self.startup_timeout_s:g}s (raise "
                            "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS on a slow machine)")
                    time.sleep(0.2)
                self.process = None
                if code != _STARTUP_FAILURE:  # not a port race: trying again will not help
                    break
        raise PrefectServerError(f"the local Prefect server exited at start with code {code}")

    def stop(self, timeout_s: float = 10.0) -> None:
        """Stop the server (SIGTERM, then SIGKILL after `timeout_s`) and reap it."""
        if self.process is None:
            return
        self.process.terminate()
        try:
            self.process.wait(timeout_s)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        logger.info("stopped the local Prefect server on %s", self.api_url)
        self.process = None


def _drain_prefect_workers() -> None:
    """Send the logs and events Prefect still buffers before their server goes away."""
    APILogWorker.drain_all(timeout=_DRAIN_TIMEOUT_S)
    EventsWorker.drain_all(timeout=_DRAIN_TIMEOUT_S)


@contextmanager
def local_prefect_api(*, startup_timeout_s: float | None = None) -> Iterator[str | None]:
    """Make sure the flows run inside this block have a Prefect API that goes with the run.

    - `PREFECT_API_URL` set (environment or profile): use that server, start nothing.
    - Linux: start a `LocalPrefectServer`, point `PREFECT_API_URL` at it (environment and
      Prefect's global settings, so Prefect's worker threads see it too), and stop it when the
      block ends -- or let the kernel kill it if this process is killed.
    - elsewhere: Prefect starts its own temporary server (stopped at exit, not on SIGKILL).

    Call it from the main thread.

    Args:
        startup_timeout_s: how long the server may take to start (default: Prefect's
            `PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS`, as for its own temporary server).

    Yields:
        The API URL in use, or None when Prefect starts its own temporary server.

    Raises:
        PrefectServerError: the local server did not start.
    """
    configured = PREFECT_API_URL.value()
    if configured:
        yield configured
        return
    if not dies_with_parent_supported() or threading.current_thread() is not \
            threading.main_thread():
        logger.info("no PREFECT_API_URL: Prefect starts its own temporary server")
        yield None
        return
    if startup_timeout_s is None:
        startup_timeout_s = float(PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS.value())
    server = LocalPrefectServer(startup_timeout_s=startup_timeout_s)
    api_url = server.start()
    # The server runs without its UI (as Prefect's own temporary one): no dead "View at" links.
    pointed = {"PREFECT_API_URL": api_url, "PREFECT_UI_URL": os.environ.get("PREFECT_UI_URL", "")}
    before = {name: os.environ.get(name) for name in pointed}
    os.environ.update(pointed)
    refresh_global_settings_context()
    try:
        yield api_url
    finally:
        try:
            _drain_prefect_workers()
        finally:
            for name, value in before.items():
                if value is None:
                    os.environ.pop(name, None)
                else:
                    os.environ[name] = value
            refresh_global_settings_context()
            server.stop()
