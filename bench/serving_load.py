"""Serving load benchmark: user recommendations under wrk beside the same server's `/health`.

    python -m bench serving-load --workers 1 2 --connections 16 1 --duration 10 --repeat 2

Starts its own `secantusd-py` unless `--uri` is given, publishes a generated version
(`--users` x top-50, genres attached), then for each worker count and with the document cache
on and off (`RECSYS_API_CACHE_ENTRIES=0`: every request reads MongoDB) starts the API the way
production does (`recsys serve --workers N`, JSON logs on, access log and rate limit off) and
drives it with `wrk` (a separate process, one thread; `apt-get install wrk`) at each number of
connections:

- `GET /health`: the framework's floor on this server (no key, no database, a constant answer);
- `GET /users/{id}/recommendations?k=10`: a Lua script rotates over the first `--hot-users`
  ids (a hot set the cache holds after a warm-up).

The two alternate (health, recs, health, recs, ...) `--repeat` times, so a change of the
machine's load hits both sides. The figure of merit is the ratio of their throughputs; on a
shared machine the absolute numbers move with the load, the ratio less. Each run also records
the CPU time that the API's processes, the MongoDB server (when this benchmark started it, or
`--mongo-pid`) and wrk spent per request: on a CPU-bound machine the throughput ratio tends to
the inverse ratio of these costs, which other agents' load disturbs much less than req/s.
Prints one JSON line per wrk run, then a table of medians with the ratios and the load average.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
from pymongo import MongoClient

from bench.child_process import REPO
from bench.publish import VERSION, make_payload
from recsys.mongo_server import EmbeddedMongo, free_port
from serving.store import MongoServingStore
from serving.version_writer import write_payload_version

logger = logging.getLogger("bench.serving_load")
DB = "bench_serving"

# `path` is a Lua expression; each wrk thread starts the rotation at its own offset.
WRK_SCRIPT = """
local n = %(users)d
local i = math.random(0, n - 1)
request = function()
  i = (i + 7919) %% n
  return wrk.format("GET", %(path)s)
end
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format("RESULT %%d %%d %%d %%d %%d %%d %%d %%d\\n", summary.requests,
    summary.duration, latency:percentile(50), latency:percentile(90), latency:percentile(99),
    latency.max, e.status, e.connect + e.read + e.write + e.timeout))
end
"""
RECS_PATH = 'string.format("/users/u%08d/recommendations?k=10", i)'
HEALTH_PATH = '"/health"'


def write_scripts(folder: Path, hot_users: int) -> dict[str, Path]:
    """The wrk scripts of both targets, by name."""
    scripts = {}
    for name, path in (("health", HEALTH_PATH), ("recs", RECS_PATH)):
        scripts[name] = folder / f"{name}.lua"
        scripts[name].write_text(WRK_SCRIPT % {"users": hot_users, "path": path})
    return scripts


def _cpu_seconds(pid: int) -> float:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:  # gone
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _descendants(pid: int) -> list[int]:
    """`pid` and every process below it (the uvicorn workers of `recsys serve`)."""
    parents: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        parents.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    out, todo = [], [pid]
    while todo:
        current = todo.pop()
        out.append(current)
        todo += parents.get(current, [])
    return out


def cpu_snapshot(api_pid: int, mongo_pid: int | None) -> dict[str, float]:
    """CPU seconds so far of the API's process tree, the MongoDB server and finished children
    (wrk, once `subprocess.run` has waited for it)."""
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return {"api": sum(_cpu_seconds(p) for p in _descendants(api_pid)),
            "mongo": _cpu_seconds(mongo_pid) if mongo_pid else 0.0,
            "wrk": children.ru_utime + children.ru_stime}


def run_wrk(url: str, script: Path, connections: int, duration: float) -> dict[str, float]:
    """One wrk run (one thread): requests/s, latency percentiles (ms) and error counts."""
    out = subprocess.run(
        ["wrk", "-t1", f"-c{connections}", f"-d{duration:g}s", "--timeout", "5s",
         "-s", str(script), url],
        capture_output=True, text=True, check=True,
    ).stdout
    line = next(x for x in out.splitlines() if x.startswith("RESULT"))
    reqs, dur_us, p50, p90, p99, lmax, status_errors, socket_errors = (
        int(v) for v in line.split()[1:])
    return {"requests": reqs, "rps": round(reqs / (dur_us / 1e6), 1), "p50_ms": p50 / 1000,
            "p90_ms": p90 / 1000, "p99_ms": p99 / 1000, "max_ms": lmax / 1000,
            "non_2xx": status_errors, "socket_errors": socket_errors}


def measured_run(url: str, script: Path, connections: int, duration: float,
                 pids: tuple[int, int | None]) -> dict[str, float]:
    """`run_wrk` plus the CPU milliseconds per request of the API, MongoDB and wrk."""
    before = cpu_snapshot(*pids)
    res = run_wrk(url, script, connections, duration)
    after = cpu_snapshot(*pids)
    per_request = {f"cpu_ms_{k}": round((after[k] - before[k]) * 1000 / max(res["requests"], 1),
                                        4) for k in before}
    total = sum(per_request.values())
    return {**res, **per_request, "cpu_ms_total": round(total, 4)}


def load_average() -> str:
    """The 1-, 5- and 15-minute load averages."""
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


def start_api(uri: str, port: int, *, workers: int, cache_entries: int, data_dir: Path,
              log: Path) -> subprocess.Popen[bytes]:
    """`recsys serve` in its own process on `port`, once it answers `/ready`."""
    env = {**os.environ, "MONGODB_URI": uri, "MONGODB_DB": DB, "RECSYS_DATA_DIR": str(data_dir),
           "RECSYS_API_RATE_LIMIT_PER_SECOND": "0", "RECSYS_TOP_N": "50",
           "RECSYS_API_CACHE_ENTRIES": str(cache_entries), "RECSYS_API_ACCESS_LOG": "false"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "recsys", "serve", "--host", "127.0.0.1", "--port", str(port),
         "--workers", str(workers)],
        cwd=REPO, env=env, stdout=log.open("ab"), stderr=subprocess.STDOUT,
    )
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"the API exited with {proc.returncode}; see {log}")
        try:
            if httpx.get(f"http://127.0.0.1:{port}/ready", timeout=1).status_code == 200:
                return proc
        except httpx.HTTPError:
            pass
        time.sleep(0.3)
    proc.kill()
    raise RuntimeError(f"API did not become ready; see {log}")


def stop_api(proc: subprocess.Popen[bytes]) -> None:
    proc.terminate()
    try:
        proc.wait(20)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(5)


def measure_server(url: str, scripts: dict[str, Path], args: argparse.Namespace,
                   label: dict[str, Any], pids: tuple[int, int | None]) -> list[dict[str, Any]]:
    """Warm up (fill the cache), then alternate health and recs runs at each connection count."""
    run_wrk(url, scripts["recs"], 16, args.warmup)
    run_wrk(url, scripts["health"], 16, 2)
    rows = []
    for connections in args.connections:
        for rep in range(args.repeat):
            for target in ("health", "recs"):
                load = load_average()
                res = measured_run(url, scripts[target], connections, args.duration, pids)
                row = {**label, "target": target, "connections": connections, "rep": rep,
                       **res, "load": load}
                print(json.dumps(row), flush=True)
                rows.append(row)
    return rows


def summarize(rows: list[dict[str, Any]]) -> str:
    """A markdown table: per server and connections, median req/s and latencies of both targets
    and the ratio of the medians (recs / health)."""
    groups: dict[tuple[Any, ...], dict[str, list[dict[str, Any]]]] = {}
    for row in rows:
        key = (row["workers"], row["cache"], row["connections"])
        groups.setdefault(key, {}).setdefault(row["target"], []).append(row)
    out = ["| workers | cache | conns | /health req/s | p50 / p99 ms | recs req/s | p50 / p99 ms "
           "| recs / health | CPU ms/req health / recs | CPU ratio | load avg |",
           "|---|---|---|---|---|---|---|---|---|---|---|"]
    keys = ("rps", "p50_ms", "p99_ms", "cpu_ms_total")
    for (workers, cache, conns), targets in groups.items():
        med = {t: {k: statistics.median(r[k] for r in rs) for k in keys}
               for t, rs in targets.items()}
        health, recs = med["health"], med["recs"]
        loads = sorted(float(r["load"].split()[0]) for rs in targets.values() for r in rs)
        out.append(
            f"| {workers} | {cache} | {conns} | {health['rps']:,.0f} | {health['p50_ms']:.2f} / "
            f"{health['p99_ms']:.2f} | {recs['rps']:,.0f} | {recs['p50_ms']:.2f} / "
            f"{recs['p99_ms']:.2f} | **{recs['rps'] / health['rps']:.2f}** | "
            f"{health['cpu_ms_total']:.3f} / {recs['cpu_ms_total']:.3f} | "
            f"{health['cpu_ms_total'] / recs['cpu_ms_total']:.2f} | {loads[0]}-{loads[-1]} |")
    return "\n".join(out)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The `python -m bench serving-load` command line."""
    parser = argparse.ArgumentParser(prog="python -m bench serving-load",
                                     description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, default=10_000)
    parser.add_argument("--items", type=int, default=5_000)
    parser.add_argument("--hot-users", type=int, default=1000,
                        help="requests rotate over the first N users (a set the cache holds)")
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--cache", choices=["on", "off"], nargs="+", default=["on", "off"])
    parser.add_argument("--connections", type=int, nargs="+", default=[16, 1])
    parser.add_argument("--duration", type=float, default=10, help="seconds per wrk run")
    parser.add_argument("--repeat", type=int, default=2, help="health/recs pairs per setting")
    parser.add_argument("--warmup", type=float, default=15,
                        help="seconds of recs before measuring (every worker must see the hot set)")
    parser.add_argument("--uri", help="an existing MongoDB (default: start secantusd-py)")
    parser.add_argument("--mongo-pid", type=int,
                        help="with --uri: the server's pid, to count its CPU time")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    """Publish a generated version, then load each API configuration; print the figures."""
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    tmp = Path(tempfile.mkdtemp(prefix="bench-serving-"))
    server = None
    uri, mongo_pid = args.uri, args.mongo_pid
    if uri is None:
        server = EmbeddedMongo(state_dir=tmp, port=free_port(), storage_path=tmp / "db")
        state = server.start()
        uri, mongo_pid = state.uri, state.pid
    client: MongoClient = MongoClient(uri, tz_aware=True)
    rows: list[dict[str, Any]] = []
    try:
        client.drop_database(DB)
        store = MongoServingStore(client[DB])
        logger.info("publishing %d users ...", args.users)
        write_payload_version(store.db, make_payload(args.users, args.items, 50, 20, 32, 0))
        store.activate(VERSION)
        scripts = write_scripts(tmp, min(args.hot_users, args.users))
        for workers in args.workers:
            for cache in args.cache:
                port = free_port()
                api = start_api(uri, port, workers=workers,
                                cache_entries=100_000 if cache == "on" else 0,
                                data_dir=tmp / "data", log=tmp / "api.log")
                try:
                    rows += measure_server(f"http://127.0.0.1:{port}", scripts, args,
                                           {"workers": workers, "cache": cache},
                                           (api.pid, mongo_pid))
                finally:
                    stop_api(api)
        print(summarize(rows), flush=True)
    finally:
        client.drop_database(DB)
        client.close()
        if server is not None:
            server.stop()


if __name__ == "__main__":
    main()
