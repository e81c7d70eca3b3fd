"""Stage `serving`: the API's user recommendations beside the same server's `/health`, under wrk.

Issue 14's serving target is a throughput ratio against the framework's floor: with one worker
and the cache on, `GET /users/{id}/recommendations?k=10` at >= 0.7x the requests per second of
the same server's `GET /health`, both measured by `wrk` (a separate load process, one thread)
at 16 connections. Each side starts its own API process (`recsys serve`, 1 worker, rate limit
off) over the version the publish stage served, warms it up, then measures; the peak RSS
reported is the API server's (`VmHWM` of its process), not this child's.

The full serving benchmark (cache on and off, 1 and 2 workers, several concurrencies) is
`python -m bench serving-load` (`bench/serving_load.py`); this row repeats the headline
measurement on the data the pipeline published at the run's size.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import numpy as np

from bench.child_process import REPO, process_peak_rss_mib
from bench.workspace import DB_NAME, SEED, Size, bench_settings, phase_main, read_output
from recsys.mongo_server import free_port
from training.registry import load_model

HOT_USERS = 1000  # requests draw from this many users: a hot set the API's cache can hold
CONNECTIONS = 16
WRK_THREADS = 1  # as `python -m bench serving-load` runs it
WARM_UP_SECONDS = 3

# `done` prints one machine-readable line: requests, duration (us), p50, p99 (us), errors.
_WRK_DONE = """
done = function(summary, latency, requests)
  io.write(string.format("RESULT %d %d %d %d %d\\n", summary.requests, summary.duration,
    latency:percentile(50), latency:percentile(99), summary.errors.status
    + summary.errors.connect + summary.errors.read + summary.errors.write
    + summary.errors.timeout))
end
"""
_RECS_REQUEST = """
local ids = {%s}
math.randomseed(42)
request = function()
  return wrk.format("GET", "/users/" .. ids[math.random(#ids)] .. "/recommendations?k=10")
end
"""
_HEALTH_REQUEST = """
request = function()
  return wrk.format("GET", "/health")
end
"""


def serving_users(work: Path) -> list[str]:
    """The hot set: `HOT_USERS` of the model's users, drawn with the benchmark's seed."""
    _, user_ids, _, _ = load_model(Path(read_output(work, "model_dir")))
    rng = np.random.default_rng(SEED)
    return [str(u) for u in rng.choice(np.asarray(user_ids),
                                       size=min(HOT_USERS, len(user_ids)), replace=False)]


def _wait_ready(url: str, seconds: float = 60) -> None:
    deadline = time.monotonic() + seconds
    while True:
        try:
            if httpx.get(f"{url}/ready", timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        if time.monotonic() > deadline:
            raise RuntimeError(f"the API did not become ready within {seconds:.0f} s")
        time.sleep(0.3)


def _wrk(url: str, script: Path, seconds: int) -> list[int]:
    out = subprocess.run(["wrk", f"-t{WRK_THREADS}", f"-c{CONNECTIONS}", f"-d{seconds}s",
                          "-s", str(script), url],
                         capture_output=True, text=True, check=True).stdout
    return [int(v) for v in next(x for x in out.splitlines()
                                 if x.startswith("RESULT")).split()[1:]]


def _load_api(work: Path, size: Size, uri: str, script_text: str) -> dict[str, Any]:
    """Start the API, warm it up with `script_text`'s requests, measure them with wrk."""
    if shutil.which("wrk") is None:
        raise RuntimeError("wrk is not installed (apt-get install wrk)")
    settings = bench_settings(work, uri)
    script = work / "serving.lua"
    script.write_text(script_text + _WRK_DONE)
    port = free_port()
    env = {**os.environ, "MONGODB_URI": uri, "MONGODB_DB": DB_NAME,
           "RECSYS_DATA_DIR": str(settings.data_dir), "RECSYS_API_RATE_LIMIT_PER_SECOND": "0"}
    # as production starts it (`recsys serve`); with one worker uvicorn serves in this process
    api = subprocess.Popen(
        [sys.executable, "-m", "recsys", "serve", "--host", "127.0.0.1", "--port", str(port),
         "--workers", "1"],
        cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    try:
        _wait_ready(url)
        _wrk(url, script, WARM_UP_SECONDS)  # fills the cache for the hot set, as in production
        requests, duration_us, p50_us, p99_us, errors = _wrk(url, script, size.serving_seconds)
        api_peak = process_peak_rss_mib(api.pid)
    finally:
        api.terminate()
        api.wait(15)
    return {"seconds": duration_us / 1e6, "requests": requests,
            "rps": requests / (duration_us / 1e6), "p50_ms": p50_us / 1000,
            "p99_ms": p99_us / 1000, "errors": errors, "connections": CONNECTIONS,
            "workers": 1, "peak_rss_mib": api_peak}


def baseline(work: Path, size: Size, uri: str) -> dict[str, Any]:
    """`GET /health` of the same API (1 worker), wrk at 16 connections: the framework's floor."""
    return _load_api(work, size, uri, _HEALTH_REQUEST)


def ours(work: Path, size: Size, uri: str) -> dict[str, Any]:
    """`GET /users/{id}/recommendations?k=10` over the hot set, cache on, wrk at 16 connections."""
    users = serving_users(work)
    return _load_api(work, size, uri, _RECS_REQUEST % ", ".join(f'"{u}"' for u in users))


PHASES = {"baseline": baseline, "ours": ours}

if __name__ == "__main__":
    phase_main(PHASES)
