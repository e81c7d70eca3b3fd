"""Stage `serving`: the API under `wrk` beside a bare pymongo `find_one` loop on the same ids."""

from __future__ import annotations

import os
import random
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import numpy as np
from pymongo import MongoClient

from bench.child_process import REPO
from bench.workspace import DB_NAME, RUN_ID, SEED, Size, bench_settings, phase_main, read_output
from recsys.mongo import recs_collection
from recsys.mongo_server import free_port
from training.registry import load_model

HOT_USERS = 1000  # requests draw from this many users: a hot set the API's cache can hold

WRK_SCRIPT = """
local ids = {%s}
math.randomseed(42)
request = function()
  return wrk.format("GET", "/users/" .. ids[math.random(#ids)] .. "/recommendations?k=10")
end
done = function(summary, latency, requests)
  io.write(string.format("RESULT %%d %%d %%d %%d %%d\\n", summary.requests, summary.duration,
    latency:percentile(50), latency:percentile(99), summary.errors.status
    + summary.errors.connect + summary.errors.read + summary.errors.write
    + summary.errors.timeout))
end
"""


def serving_users(work: Path) -> list[str]:
    """The hot set: `HOT_USERS` of the model's users, drawn with the benchmark's seed."""
    _, user_ids, _, _ = load_model(Path(read_output(work, "model_dir")))
    rng = np.random.default_rng(SEED)
    return [str(u) for u in rng.choice(np.asarray(user_ids),
                                       size=min(HOT_USERS, len(user_ids)), replace=False)]


def baseline(work: Path, size: Size, uri: str) -> dict[str, Any]:
    """A pymongo `find_one({"_id": user})` loop on the published recommendations, 1 thread."""
    users = serving_users(work)
    client: MongoClient = MongoClient(uri)
    coll = client[DB_NAME][recs_collection(RUN_ID)]
    rng = random.Random(SEED)
    latencies: list[float] = []
    end = time.perf_counter() + size.serving_seconds
    while time.perf_counter() < end:
        started = time.perf_counter()
        coll.find_one({"_id": rng.choice(users)})
        latencies.append(time.perf_counter() - started)
    client.close()
    latencies.sort()
    return {"seconds": size.serving_seconds, "requests": len(latencies),
            "rps": len(latencies) / size.serving_seconds,
            "p50_ms": 1000 * latencies[len(latencies) // 2],
            "p99_ms": 1000 * latencies[min(len(latencies) - 1, int(0.99 * len(latencies)))]}


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
    out = subprocess.run(["wrk", "-t1", "-c1", f"-d{seconds}s", "-s", str(script), url],
                         capture_output=True, text=True, check=True).stdout
    return [int(v) for v in next(x for x in out.splitlines()
                                 if x.startswith("RESULT")).split()[1:]]


def ours(work: Path, size: Size, uri: str) -> dict[str, Any]:
    """The API in its own uvicorn process, loaded by `wrk` (another process), 1 connection."""
    if shutil.which("wrk") is None:
        raise RuntimeError("wrk is not installed (apt-get install wrk)")
    settings = bench_settings(work, uri)
    script = work / "recs.lua"
    script.write_text(WRK_SCRIPT % ", ".join(f'"{u}"' for u in serving_users(work)))
    port = free_port()
    env = {**os.environ, "MONGODB_URI": uri, "MONGODB_DB": DB_NAME,
           "RECSYS_DATA_DIR": str(settings.data_dir), "RECSYS_API_RATE_LIMIT_PER_SECOND": "0"}
    api = subprocess.Popen(
        [sys.executable, "-m", "uvicorn", "--factory", "serving.api.main:app_from_environment",
         "--host", "127.0.0.1", "--port", str(port), "--no-access-log", "--log-level", "warning"],
        cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    try:
        _wait_ready(url)
        _wrk(url, script, 3)  # warm-up: fills the cache for the hot set, as in production
        requests, duration_us, p50_us, p99_us, errors = _wrk(url, script, size.serving_seconds)
    finally:
        api.terminate()
        api.wait(15)
    return {"seconds": duration_us / 1e6, "requests": requests,
            "rps": requests / (duration_us / 1e6), "p50_ms": p50_us / 1000,
            "p99_ms": p99_us / 1000, "errors": errors}


PHASES = {"baseline": baseline, "ours": ours}

if __name__ == "__main__":
    phase_main(PHASES)
