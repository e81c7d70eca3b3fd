"""Run the embedded MongoDB-wire server (`secantusd-py` from the `secantusdb` package).

We only launch it as a subprocess (it is GPL); everything else talks to it through pymongo and
`MONGODB_URI`, exactly as it would talk to a user's own MongoDB.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from recsys.errors import MongoServerError

log = logging.getLogger(__name__)

SERVER_EXECUTABLE = "secantusd-py"


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that is free right now on `host`."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def server_executable() -> str:
    """Path of `secantusd-py`: next to this interpreter first (a venv), then on PATH."""
    beside = Path(sys.executable).parent / SERVER_EXECUTABLE
    if beside.exists():
        return str(beside)
    found = shutil.which(SERVER_EXECUTABLE)
    if found is None:
        raise MongoServerError(
            f"'{SERVER_EXECUTABLE}' not found: install the 'secantusdb' package "
            "or point MONGODB_URI at your own MongoDB"
        )
    return found


def ping(uri: str, timeout_ms: int = 1000) -> bool:
    """True when a MongoDB server answers `ping` at `uri`."""
    from pymongo import MongoClient
    from pymongo.errors import PyMongoError

    client: MongoClient = MongoClient(
        uri, serverSelectionTimeoutMS=timeout_ms, connectTimeoutMS=timeout_ms
    )
    try:
        client.admin.command("ping")
        return True
    except PyMongoError:
        return False
    finally:
        client.close()


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


@dataclass
class ServerState:
    pid: int
    host: str
    port: int
    storage_path: str

    @property
    def uri(self) -> str:
        return f"mongodb://{self.host}:{self.port}"


class EmbeddedMongo:
    """Start, stop and inspect one `secantusd-py` server.

    `state_dir` holds `server.json` (pid, port, storage path) and `server.log`, so `recsys mongo
    stop|status` in another process finds the server that `start` launched.
    """

    def __init__(self, *, state_dir: Path, host: str = "127.0.0.1", port: int = 27017,
                 storage_path: Path | str | None = None) -> None:
        self.state_dir = Path(state_dir)
        self.host = host
        self.port = port
        self.storage_path = str(storage_path) if storage_path is not None else str(
            self.state_dir / "db")
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def uri(self) -> str:
        return f"mongodb://{self.host}:{self.port}"

    @property
    def _state_file(self) -> Path:
        return self.state_dir / "server.json"

    @property
    def log_file(self) -> Path:
        return self.state_dir / "server.log"

    def read_state(self) -> ServerState | None:
        """The recorded server, if its process is still alive."""
        try:
            state = ServerState(**json.loads(self._state_file.read_text()))
        except (FileNotFoundError, json.JSONDecodeError, TypeError):
            return None
        return state if _pid_alive(state.pid) else None

    def start(self, *, wait_seconds: float = 300.0) -> ServerState:
        """Launch the server in the background (no-op when ours is already running)."""
        running = self.read_state()
        if running is not None and ping(running.uri):
            log.info("embedded MongoDB already running at %s (pid %d)", running.uri, running.pid)
            return running
        if ping(self.uri, timeout_ms=300):
            raise MongoServerError(
                f"port {self.port} already has a MongoDB server that this project did not start; "
                f"use it with MONGODB_URI={self.uri} or pick another --port"
            )
        self.state_dir.mkdir(parents=True, exist_ok=True)
        if self.storage_path != ":memory:":
            Path(self.storage_path).mkdir(parents=True, exist_ok=True)
        cmd = [server_executable(), "--host", self.host, "--port", str(self.port),
               "--storage-path", self.storage_path, "--log-level", "WARNING"]
        with self.log_file.open("ab") as log_out:
            self._process = subprocess.Popen(  # noqa: S603 - fixed argv, no shell
                cmd, stdout=log_out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
        state = ServerState(pid=self._process.pid, host=self.host, port=self.port,
                            storage_path=self.storage_path)
        deadline = time.monotonic() + wait_seconds
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                tail = self.log_file.read_text(errors="replace")[-2000:]
                raise MongoServerError(f"secantusd-py exited with {self._process.returncode}:\n{tail}")
            if ping(state.uri, timeout_ms=300):
                self._state_file.write_text(json.dumps(state.__dict__))
                log.info("embedded MongoDB listening at %s (pid %d)", state.uri, state.pid)
                return state
            time.sleep(0.2)
        self._kill(state.pid)
        raise MongoServerError(f"secantusd-py did not answer on {state.uri} within {wait_seconds}s "
                               f"(log: {self.log_file}); a large storage dir takes minutes to "
                               "open: raise RECSYS_MONGO_START_TIMEOUT_S")

    def stop(self, *, wait_seconds: float = 15.0) -> bool:
        """Stop the recorded server; False when none was running."""
        state = self.read_state()
        self._state_file.unlink(missing_ok=True)
        if state is None:
            return False
        self._kill(state.pid, wait_seconds=wait_seconds)
        return True

    def _kill(self, pid: int, *, wait_seconds: float = 15.0) -> None:
        try:
            os.kill(pid, signal.SIGTERM)
        except ProcessLookupError:
            return
        deadline = time.monotonic() + wait_seconds
        while time.monotonic() < deadline:
            if self._process is not None and self._process.pid == pid:
                if self._process.poll() is not None:
                    return
            elif not _pid_alive(pid):
                return
            time.sleep(0.1)
        os.kill(pid, signal.SIGKILL)
        if self._process is not None and self._process.pid == pid:
            self._process.wait(5)
