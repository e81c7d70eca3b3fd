"""Regression (issue 16): `recsys serve --workers 2` reports every worker's requests at /metrics.

Before the fix each worker kept its metrics in its own memory, so a scrape saw the counters of
whichever worker answered it. This runs the real command (two uvicorn worker processes) over a
published version on the session's MongoDB.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.parser import text_string_to_metric_families

from recsys.mongo_server import free_port
from serving.store import MongoServingStore
from serving.version_writer import write_payload_version
from tests.serving.payloads import N_USERS, make_payload

pytestmark = pytest.mark.integration

ROUTE = "/users/{user_id}/recommendations"
START_TIMEOUT_S = 120


def _requests_per_worker(folder: Path) -> dict[str, float]:
    """Requests to ROUTE each worker recorded, from its own file (pid -> count)."""
    counts: dict[str, float] = {}
    for file in folder.glob("counter_*.db"):
        pid = file.stem.split("_")[-1]
        counts[pid] = sum(
            sample.value for metric in MultiProcessCollector.merge([str(file)])
            for sample in metric.samples
            if sample.name == "recsys_http_requests_total" and sample.labels["route"] == ROUTE)
    return counts


def _scraped(text: str) -> dict[str, list[tuple[dict[str, str], float]]]:
    return {family.name: [(s.labels, s.value) for s in family.samples]
            for family in text_string_to_metric_families(text)}


@pytest.fixture
def server(tmp_path: Path, mongo_uri: str, db_name: str,
           store: MongoServingStore) -> Iterator[tuple[str, subprocess.Popen[bytes], Path]]:
    write_payload_version(store.db, make_payload("v1"))
    store.activate("v1")
    port = free_port()
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("RECSYS_", "PROMETHEUS_")) and k not in ("MONGODB_URI",
                                                                        "MONGODB_DB")}
    env.update(MONGODB_URI=mongo_uri, MONGODB_DB=db_name, RECSYS_DATA_DIR=str(tmp_path / "data"),
               RECSYS_API_LOG_JSON="false", RECSYS_ACTIVE_POLL_SECONDS="0.2")
    log = (tmp_path / "serve.log").open("wb")
    proc = subprocess.Popen(  # noqa: S603 - fixed argv
        [sys.executable, "-m", "recsys", "serve", "--port", str(port), "--workers", "2"],
        cwd=tmp_path, env=env, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
        start_new_session=True)
    folder = tmp_path / "data" / "api-metrics" / str(proc.pid)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + START_TIMEOUT_S
        while True:  # both workers made their metrics, and one of them answers
            assert proc.poll() is None, (tmp_path / "serve.log").read_text()
            if len(list(folder.glob("counter_*.db"))) == 2:
                try:
                    if httpx.get(f"{base}/ready", timeout=2).status_code == 200:
                        break
                except httpx.HTTPError:
                    pass
            assert time.monotonic() < deadline, (tmp_path / "serve.log").read_text()
            time.sleep(0.3)
        yield base, proc, folder
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGINT)
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(10)
        log.close()


def test_metrics_sum_requests_over_both_workers(
        server: tuple[str, subprocess.Popen[bytes], Path]) -> None:
    base, proc, folder = server
    sent = 0

    def one(i: int) -> int:
        # a connection per request, so the kernel hands them to either worker
        with httpx.Client(base_url=base, timeout=10) as client:
            return client.get(f"/users/u{i % N_USERS}/recommendations").status_code

    with ThreadPoolExecutor(8) as pool:
        for _ in range(10):  # until both workers have answered some (bounded)
            statuses = list(pool.map(one, range(40)))
            assert statuses == [200] * 40
            sent += 40
            if len([n for n in _requests_per_worker(folder).values() if n > 0]) == 2:
                break
    per_worker = _requests_per_worker(folder)
    assert len(per_worker) == 2 and all(n > 0 for n in per_worker.values()), per_worker
    assert sum(per_worker.values()) == sent

    for _ in range(4):  # whichever worker answers the scrape, it reports both
        metrics = _scraped(httpx.get(f"{base}/metrics", timeout=10).text)
        served = [value for labels, value in metrics["recsys_http_requests"]
                  if labels.get("route") == ROUTE and labels.get("status") == "200"]
        assert served == [sent], metrics["recsys_http_requests"]
        assert metrics["recsys_active_model_version_info"] == [({"version": "v1"}, 1.0)]
        lookups = sum(v for labels, v in metrics["recsys_cache_requests"]
                      if labels.get("result") in ("hit", "miss"))
        assert lookups >= sent

    os.killpg(proc.pid, signal.SIGINT)
    assert proc.wait(30) == 0
    assert not folder.exists()  # the start's folder goes with the server


def test_worker_connections_get_tcp_nodelay() -> None:
    """Regression (issue 14): with --workers uvicorn's listening socket has proto 0, so asyncio
    left Nagle on and every kept-alive answer waited ~40 ms for a delayed ACK."""
    import asyncio
    import socket

    from uvicorn.config import Config
    from uvicorn.server import ServerState

    from serving.api.server import NoDelayH11Protocol

    async def app(scope, receive, send) -> None:  # pragma: no cover - never called
        pass

    class Transport(asyncio.Transport):
        def __init__(self, sock: socket.socket) -> None:
            super().__init__()
            self.sock = sock

        def get_extra_info(self, name, default=None):
            return {"socket": self.sock, "sockname": ("127.0.0.1", 1),
                    "peername": ("127.0.0.1", 2)}.get(name, default)

    listener = socket.socket(socket.AF_INET)  # as uvicorn binds it for several workers
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    client = socket.create_connection(listener.getsockname())
    conn, _ = listener.accept()
    loop = asyncio.new_event_loop()
    try:
        assert conn.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) == 0
        protocol = NoDelayH11Protocol(config=Config(app=app), server_state=ServerState(),
                                      app_state={}, _loop=loop)
        protocol.connection_made(Transport(conn))
        assert conn.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) != 0
    finally:
        loop.close()
        for s in (client, conn, listener):
            s.close()
