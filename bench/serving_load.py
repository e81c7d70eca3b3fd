"""Serving load benchmark: wrk against the API (uvicorn, separate process) vs a bare pymongo loop.

    python -m bench serving-load --users 10000 --concurrency 1 8 32 64 --duration 10

Starts its own `secantusd-py` unless `--uri` is given, publishes a generated version
(`--users` x top-50, genres attached), starts
`uvicorn --factory serving.api.main:app_from_environment`
in a subprocess, and runs `wrk` (a separate load process; `apt-get install wrk`) at each
concurrency on `GET /users/{random id}/recommendations?k=10` (ids drawn from the first
`--hot-users`; the find_one baseline draws from the same set), once with the document cache
on and once with it off (`RECSYS_API_CACHE_ENTRIES=0`: every request reads MongoDB). The
baseline is a bare pymongo `find_one({"_id": random user})` loop on the same collection, in
its own process, with 1 and with N threads. Prints one JSON line per measurement.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import random
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx
from pymongo import MongoClient

from bench.child_process import REPO, run_child
from bench.publish import VERSION, make_payload
from recsys.mongo import recs_collection
from recsys.mongo_server import EmbeddedMongo, free_port
from serving.store import MongoServingStore

logger = logging.getLogger("bench.serving_load")
DB = "bench_serving"

WRK_SCRIPT = """
math.randomseed(os.time() + tonumber(tostring({}):sub(8), 16))
request = function()
  local id = string.format("u%%08d", math.random(0, %d))
  return wrk.format("GET", "/users/" .. id .. "/recommendations?k=10")
end
done = function(summary, latency, requests)
  io.write(string.format("RESULT %%d %%d %%d %%d %%d %%d %%d\\n", summary.requests,
    summary.duration, latency:percentile(50), latency:percentile(95), latency:percentile(99),
    summary.errors.status + summary.errors.connect + summary.errors.read
    + summary.errors.write + summary.errors.timeout, latency.max))
end
"""


def run_wrk(url: str, script: Path, connections: int, duration: int) -> dict[str, float]:
    threads = min(2, connections)
    out = subprocess.run(
        ["wrk", f"-t{threads}", f"-c{connections}", f"-d{duration}s", "-s", str(script), url],
        capture_output=True, text=True, check=True,
    ).stdout
    line = next(x for x in out.splitlines() if x.startswith("RESULT"))
    reqs, dur_us, p50, p95, p99, errors, lmax = (int(v) for v in line.split()[1:])
    return {"requests": reqs, "rps": round(reqs / (dur_us / 1e6), 1), "p50_ms": p50 / 1000,
            "p95_ms": p95 / 1000, "p99_ms": p99 / 1000, "max_ms": lmax / 1000,
            "errors": errors}


def _find_one_worker(uri: str, users: int, seconds: float, out: list[list[float]]) -> None:
    client: MongoClient = MongoClient(uri)
    coll = client[DB][recs_collection(VERSION)]
    lat: list[float] = []
    rng = random.Random()
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        t0 = time.perf_counter()
        coll.find_one({"_id": f"u{rng.randrange(users):08d}"})
        lat.append(time.perf_counter() - t0)
    out.append(lat)
    client.close()


def find_one_loop(uri: str, users: int, threads: int, seconds: float) -> dict[str, float]:
    """`threads` pymongo clients reading random users' recommendations for `seconds`.

    Runs in a child process (see `--baseline`), so it is a separate client, like wrk.
    """
    lats: list[list[float]] = []
    workers = [threading.Thread(target=_find_one_worker, args=(uri, users, seconds, lats))
               for _ in range(threads)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    flat = sorted(x for lat in lats for x in lat)

    def pct(p: float) -> float:
        return round(flat[min(len(flat) - 1, int(p / 100 * len(flat)))] * 1000, 3)

    return {"requests": len(flat), "rps": round(len(flat) / seconds, 1), "p50_ms": pct(50),
            "p95_ms": pct(95), "p99_ms": pct(99)}


def start_api(uri: str, port: int, cache_entries: int, log: Path) -> subprocess.Popen[bytes]:
    """The API in its own uvicorn process on `port`, once it answers `/ready`."""
    env = {**os.environ, "MONGODB_URI": uri, "MONGODB_DB": DB,
           "RECSYS_API_RATE_LIMIT_PER_SECOND": "0", "RECSYS_TOP_N": "50",
           "RECSYS_API_CACHE_ENTRIES": str(cache_entries)}
    proc = subprocess.Popen(
        [sys.executable, "-m", "uvicorn", "--factory", "serving.api.main:app_from_environment",
         "--host", "127.0.0.1", "--port", str(port), "--no-access-log", "--log-level",
         "warning"],
        cwd=REPO, env=env, stdout=log.open("ab"), stderr=subprocess.STDOUT,
    )
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/ready", timeout=1).status_code == 200:
                return proc
        except httpx.HTTPError:
            pass
        time.sleep(0.3)
    proc.kill()
    raise RuntimeError(f"API did not become ready; see {log}")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The `python -m bench serving-load` command line."""
    parser = argparse.ArgumentParser(prog="python -m bench serving-load",
                                     description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, default=10_000)
    parser.add_argument("--items", type=int, default=5_000)
    parser.add_argument("--hot-users", type=int, default=1000,
                        help="requests pick users among the first N (a hot set that can be cached)")
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 8, 32, 64])
    parser.add_argument("--duration", type=int, default=10, help="seconds per measurement")
    parser.add_argument("--uri")
    parser.add_argument("--baseline", type=int, help=argparse.SUPPRESS)  # child mode: threads
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    """Publish a generated version, then load the API and the bare loop; print the figures."""
    args = parse_args(argv)
    if args.baseline:
        print(json.dumps(find_one_loop(args.uri, args.users, args.baseline, args.duration)))
        return
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    tmp = Path(tempfile.mkdtemp(prefix="bench-serving-"))
    server = None
    uri = args.uri
    if uri is None:
        server = EmbeddedMongo(state_dir=tmp, port=free_port(), storage_path=tmp / "db")
        uri = server.start().uri
    client: MongoClient = MongoClient(uri, tz_aware=True)
    try:
        client.drop_database(DB)
        store = MongoServingStore(client[DB])
        logger.info("publishing %d users ...", args.users)
        store.publish(make_payload(args.users, args.items, 50, 20, 32, 0))
        store.activate(VERSION)
        script = tmp / "recs.lua"
        script.write_text(WRK_SCRIPT % (min(args.hot_users, args.users) - 1))
        for threads in sorted({1, max(args.concurrency)}):
            out = run_child("bench.serving_load",
                            ["--uri", uri, "--users", str(min(args.hot_users, args.users)),
                             "--duration", str(args.duration), "--baseline", str(threads)])
            out.pop("process_seconds")
            print(json.dumps({"target": "pymongo find_one loop", "threads": threads, **out}),
                  flush=True)
        for label, entries in (("api, cache on", 100_000), ("api, cache off", 0)):
            port = free_port()
            api = start_api(uri, port, entries, tmp / "api.log")
            try:
                url = f"http://127.0.0.1:{port}"
                run_wrk(url, script, 8, 5)  # warm up (and fill the cache)
                for c in args.concurrency:
                    res = run_wrk(url, script, c, args.duration)
                    print(json.dumps({"target": label, "connections": c, **res}), flush=True)
            finally:
                api.terminate()
                api.wait(15)
    finally:
        client.drop_database(DB)
        client.close()
        if server is not None:
            server.stop()


if __name__ == "__main__":
    main()
