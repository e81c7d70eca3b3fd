"""A `secantusd-py --enable-test-commands` server of its own and its `failCommand` fail point."""

from __future__ import annotations

import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from pymongo import MongoClient

from recsys.mongo_server import free_port, ping, server_executable


@contextmanager
def failpoint_server(tmp_path: Path) -> Iterator[str]:
    """Start the server (EmbeddedMongo does not pass extra flags); yields its URI."""
    port = free_port()
    log = (tmp_path / "server.log").open("wb")
    proc = subprocess.Popen(  # noqa: S603 - fixed argv
        [server_executable(), "--host", "127.0.0.1", "--port", str(port), "--storage-path",
         str(tmp_path / "db"), "--enable-test-commands", "--log-level", "WARNING"],
        stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
    )
    uri = f"mongodb://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while not ping(uri, timeout_ms=500):
            assert proc.poll() is None and time.monotonic() < deadline, "server did not start"
            time.sleep(0.2)
        yield uri
    finally:
        proc.terminate()
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()


def set_failpoint(uri: str, mode: object, data: dict | None = None) -> None:
    """`configureFailPoint failCommand` with `mode` ("alwaysOn", "off", {"times": n}, ...)."""
    client: MongoClient = MongoClient(uri, serverSelectionTimeoutMS=3000)
    try:
        client.admin.command("configureFailPoint", "failCommand", mode=mode, data=data or {})
    finally:
        client.close()
