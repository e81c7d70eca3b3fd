"""The benchmark runner: every pipeline stage beside its raw baseline, at one of three sizes.

    recsys bench --size small     # 100k interactions, a minute or two
    recsys bench --size medium    # 5M interactions
    recsys bench --size large     # 50M interactions, 1M users, 100k items (hours on 2 cores)

It generates a batch deterministically (`recsys.datagen.generate_batch`, seed 42), then runs the
pipeline's own stage functions in order, each stage's output feeding the next, and measures
each beside the raw baseline the stage replaces, on the same data, in the same run:

| stage      | ours (the pipeline's code)                              | raw baseline                  |
|------------|---------------------------------------------------------|-------------------------------|
| validation | `ingest.stage.ingest_batch`: read, GE contracts, write  | `pyarrow.parquet.read_table`  |
| features   | `features.stage`: raw-store ingest + build all views    | DuckDB `COPY (view SQL)`      |
| training   | `training.stage`: holdout fit + metrics, refit, top-N,  | bare implicit `fit` +         |
|            | similar items, explanations                             | `recommend(all users)`        |
| publish    | `serving.stage.publish_run`: write, verify, switch      | `insert_many` of the same docs|
| serving    | the API (uvicorn) under `wrk`, cache on                 | pymongo `find_one` loop       |

Every measurement runs in a fresh child process, which reports its wall time and its own peak
RSS (`VmHWM`), so no phase inherits another's memory or warm caches. Results are written after
each phase to `bench/results/<size>.json` (a run cut short keeps what it measured) and, at the
end, a markdown table to `bench/results/<size>.md`. "End to end" is the sum of our pipeline
stages (validation .. publish) against the sum of their baselines; serving is a throughput
ratio and is reported apart.

MongoDB: an embedded `secantusd-py` under the work directory, or `--uri` (e.g. a real mongod).
"""

from __future__ import annotations

import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
RESULTS_DIR = REPO / "bench" / "results"
SEED = 42
RUN_ID = "bench"
DB_NAME = "recsys_bench"
PIPELINE_STAGES = ("validation", "features", "training", "publish")
STAGES = (*PIPELINE_STAGES, "serving")


@dataclass(frozen=True)
class Size:
    name: str
    interactions: int
    users: int
    items: int
    serving_seconds: int  # per load measurement


SIZES = {
    "small": Size("small", 100_000, 5_000, 2_000, 5),
    "medium": Size("medium", 5_000_000, 100_000, 20_000, 10),
    "large": Size("large", 50_000_000, 1_000_000, 100_000, 10),
}


# --------------------------------------------------------------------------- child-side phases

def _peak_rss_mib() -> float:
    """This process's peak resident set (VmHWM: unlike ru_maxrss it starts afresh at exec)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return round(int(line.split()[1]) / 1024, 1)
    import resource

    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)


def _settings(work: Path, uri: str) -> Any:
    from recsys.settings import Settings

    # The bench DB holds one version at a time; Data Docs on, as the pipeline runs them.
    return Settings(data_dir=work / "data", mongodb_uri=uri, mongodb_db=DB_NAME, keep_versions=1)


def _batch_dir(work: Path) -> Path:
    return work / "batch"


def _raw_files(settings: Any) -> dict[str, Path]:
    return {n: settings.raw_dir / RUN_ID / f"{n}.parquet" for n in ("users", "items",
                                                                     "interactions")}


def _manifest(settings: Any) -> Any:
    from features.snapshot import load_manifest

    return load_manifest(settings.features_dir, RUN_ID)


def _model_dir(settings: Any) -> Path:
    return settings.models_dir / RUN_ID


def phase_generate(work: Path, size: Size, uri: str) -> dict[str, Any]:
    from recsys.datagen import generate_batch

    out = _batch_dir(work)
    marker = work / "generated.json"
    spec = json.dumps({**asdict(size), "seed": SEED}, sort_keys=True)
    if marker.exists() and marker.read_text() == spec:  # same size and seed: reuse the batch
        return {"seconds": 0.0, "reused": True,
                "bytes": sum(f.stat().st_size for f in out.iterdir())}
    shutil.rmtree(out, ignore_errors=True)
    marker.unlink(missing_ok=True)
    started = time.perf_counter()
    generate_batch(out, users=size.users, items=size.items, interactions=size.interactions,
                   seed=SEED, fmt="parquet")
    seconds = time.perf_counter() - started
    marker.write_text(spec)
    return {"seconds": seconds, "bytes": sum(f.stat().st_size for f in out.iterdir())}


def phase_validation_baseline(work: Path, size: Size, uri: str) -> dict[str, Any]:
    import pyarrow.parquet as pq

    files = [_batch_dir(work) / f"{n}.parquet" for n in ("users", "items", "interactions")]
    timings, rows = [], 0
    for _ in range(3 if size.interactions <= 10_000_000 else 1):  # cheap: best of three
        started = time.perf_counter()
        rows = sum(pq.read_table(f).num_rows for f in files)
        timings.append(time.perf_counter() - started)
    return {"seconds": min(timings), "rows": rows}


def phase_validation_ours(work: Path, size: Size, uri: str) -> dict[str, Any]:
    from ingest.stage import ingest_batch
    from ingest.validate import _import_gx

    settings = _settings(work, uri)
    for folder in (settings.raw_dir, settings.validation_dir, settings.quarantine_dir):
        shutil.rmtree(folder / RUN_ID, ignore_errors=True)
    started = time.perf_counter()
    _import_gx()  # once per process; counted apart so sizes compare
    import_s = time.perf_counter() - started
    started = time.perf_counter()
    files, report = ingest_batch(_batch_dir(work), run_id=RUN_ID, settings=settings)
    return {"seconds": time.perf_counter() - started, "ge_import_seconds": import_s,
            "success": report.success,
            "rows": {s["dataset"]: s["rows"] for s in report.suites}}


def _bare_feature_copy(raw: dict[str, Path], out: Path) -> None:
    """The views' SQL through plain DuckDB COPY: no store, manifest, hashing or renames."""
    import duckdb

    from features.registry import DEFAULT_PARAMS, REGISTRY

    def lit(path: Path) -> str:
        return "'" + str(path).replace("'", "''") + "'"

    con = duckdb.connect()
    con.execute("SET TimeZone = 'UTC'")
    for name, path in raw.items():
        con.execute(f"CREATE VIEW raw_{name} AS SELECT * FROM read_parquet({lit(path)})")
    con.execute("CREATE VIEW item_genres AS SELECT item_id, UNNEST(genres) AS genre "
                "FROM raw_items")
    con.execute("CREATE TABLE build_params AS SELECT MAX(\"timestamp\") AS as_of, "
                f"{DEFAULT_PARAMS['half_life_days']}::DOUBLE AS half_life_days, "
                f"{DEFAULT_PARAMS['recent_days']}::INTEGER AS recent_days, "
                f"{DEFAULT_PARAMS['top_genres']}::INTEGER AS top_genres FROM raw_interactions")
    for view in REGISTRY.values():
        con.execute(f"COPY ({view.sql}) TO {lit(out / (view.name + '.parquet'))} "
                    "(FORMAT parquet, COMPRESSION zstd)")
    con.close()


def phase_features_baseline(work: Path, size: Size, uri: str) -> dict[str, Any]:
    settings = _settings(work, uri)
    out = work / "bare_features"
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    started = time.perf_counter()
    _bare_feature_copy(_raw_files(settings), out)
    return {"seconds": time.perf_counter() - started}


def phase_features_ours(work: Path, size: Size, uri: str) -> dict[str, Any]:
    from features.stage import build_features_as_of, ingest_run_batch

    settings = _settings(work, uri)
    shutil.rmtree(settings.store_dir, ignore_errors=True)
    shutil.rmtree(settings.features_dir, ignore_errors=True)
    started = time.perf_counter()
    ingest_run_batch(_raw_files(settings), settings=settings)
    ingest_s = time.perf_counter() - started
    manifest = build_features_as_of(None, snapshot_id=RUN_ID, settings=settings)
    return {"seconds": time.perf_counter() - started, "store_ingest_seconds": ingest_s,
            "rows": {n: v.rows for n, v in manifest.views.items()}}


def phase_training_baseline(work: Path, size: Size, uri: str) -> dict[str, Any]:
    import numpy as np
    from implicit.cpu.als import AlternatingLeastSquares
    from threadpoolctl import threadpool_limits

    from training.data import load_interactions

    settings = _settings(work, uri)
    matrix = load_interactions(_manifest(settings).view_path("interactions")).matrix
    with threadpool_limits(1, "blas"):  # as PITFALLS says, for both sides
        started = time.perf_counter()
        model = AlternatingLeastSquares(
            factors=settings.factors, regularization=settings.regularization,
            alpha=settings.alpha, iterations=settings.iterations, random_state=settings.seed)
        model.fit(matrix, show_progress=False)
        fit_s = time.perf_counter() - started
        started = time.perf_counter()
        model.recommend(np.arange(matrix.shape[0], dtype=np.int32), matrix, N=settings.top_n,
                        filter_already_liked_items=True)
        recommend_s = time.perf_counter() - started
    return {"seconds": fit_s + recommend_s, "fit_seconds": fit_s,
            "recommend_seconds": recommend_s, "nnz": int(matrix.nnz),
            "shape": list(matrix.shape)}


def phase_training_ours(work: Path, size: Size, uri: str) -> dict[str, Any]:
    from training.stage import score_run_model, train_run_model

    settings = _settings(work, uri)
    shutil.rmtree(_model_dir(settings), ignore_errors=True)
    manifest = _manifest(settings)
    started = time.perf_counter()
    model_dir, result = train_run_model(manifest, version=RUN_ID, settings=settings,
                                        search=False)
    train_s = time.perf_counter() - started
    score_started = time.perf_counter()
    score_run_model(model_dir, manifest, settings=settings)
    score_s = time.perf_counter() - score_started
    return {"seconds": train_s + score_s, "train_seconds": train_s, "score_seconds": score_s,
            "timings": result.metrics.get("timings", {}),
            "metrics": {m: result.metrics[m] for m in ("als", "popular")}}


def phase_publish_baseline(work: Path, size: Size, uri: str) -> dict[str, Any]:
    from pymongo import MongoClient

    from bench.publish import bare_insert
    from serving.stage import load_payload, with_item_attributes
    from training.stage import SCORES_FILE

    settings = _settings(work, uri)
    model_dir = _model_dir(settings)
    payload = with_item_attributes(load_payload(model_dir, model_dir / SCORES_FILE), settings)
    client: MongoClient = MongoClient(uri, tz_aware=True)
    try:
        client.drop_database(DB_NAME + "_bare")
        seconds = bare_insert(client[DB_NAME + "_bare"], payload, settings.publish_batch_size)
        client.drop_database(DB_NAME + "_bare")
    finally:
        client.close()
    return {"seconds": seconds, "documents": 2 * len(payload.user_ids)
            + 2 * len(payload.item_ids) + 1}


def phase_publish_ours(work: Path, size: Size, uri: str) -> dict[str, Any]:
    from pymongo import MongoClient

    from serving.stage import publish_run
    from training.stage import SCORES_FILE

    settings = _settings(work, uri)
    client: MongoClient = MongoClient(uri)
    client.drop_database(DB_NAME)  # a fresh database: the run's version must not be active
    client.close()
    model_dir = _model_dir(settings)
    started = time.perf_counter()
    summary = publish_run(model_dir, model_dir / SCORES_FILE, settings=settings)
    return {"seconds": time.perf_counter() - started, "counts": summary["counts"],
            "active_version": summary["active_version"]}


def _serving_users(settings: Any) -> list[str]:
    import numpy as np

    from training.registry import load_model

    _, user_ids, _, _ = load_model(_model_dir(settings))
    rng = np.random.default_rng(SEED)
    return [str(u) for u in rng.choice(np.asarray(user_ids), size=min(1000, len(user_ids)),
                                       replace=False)]


def phase_serving_baseline(work: Path, size: Size, uri: str) -> dict[str, Any]:
    import random

    from pymongo import MongoClient

    from serving.store import recs_collection

    settings = _settings(work, uri)
    users = _serving_users(settings)
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


def phase_serving_ours(work: Path, size: Size, uri: str) -> dict[str, Any]:
    """The API in its own uvicorn process, loaded by `wrk` (another process), 1 connection."""
    import httpx

    from recsys.mongo_server import free_port

    if shutil.which("wrk") is None:
        raise RuntimeError("wrk is not installed (apt-get install wrk)")
    settings = _settings(work, uri)
    users = _serving_users(settings)
    script = work / "recs.lua"
    script.write_text(WRK_SCRIPT % ", ".join(f'"{u}"' for u in users))
    port = free_port()
    env = {**os.environ, "MONGODB_URI": uri, "MONGODB_DB": DB_NAME,
           "RECSYS_DATA_DIR": str(settings.data_dir), "RECSYS_API_RATE_LIMIT_PER_SECOND": "0"}
    api = subprocess.Popen(
        [sys.executable, "-m", "uvicorn", "--factory", "serving.api.main:create_app", "--host",
         "127.0.0.1", "--port", str(port), "--no-access-log", "--log-level", "warning"],
        cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(f"{url}/ready", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError("the API did not become ready within 60 s")
            time.sleep(0.3)

        def wrk(seconds: int) -> list[int]:
            out = subprocess.run(["wrk", "-t1", "-c1", f"-d{seconds}s", "-s", str(script), url],
                                 capture_output=True, text=True, check=True).stdout
            return [int(v) for v in next(x for x in out.splitlines()
                                         if x.startswith("RESULT")).split()[1:]]

        wrk(3)  # warm-up: fills the cache for the hot set, as in production
        requests, duration_us, p50_us, p99_us, errors = wrk(size.serving_seconds)
    finally:
        api.terminate()
        api.wait(15)
    return {"seconds": duration_us / 1e6, "requests": requests,
            "rps": requests / (duration_us / 1e6), "p50_ms": p50_us / 1000,
            "p99_ms": p99_us / 1000, "errors": errors}


PHASES = {
    "generate": phase_generate,
    "validation/baseline": phase_validation_baseline,
    "validation/ours": phase_validation_ours,
    "features/baseline": phase_features_baseline,
    "features/ours": phase_features_ours,
    "training/baseline": phase_training_baseline,
    "training/ours": phase_training_ours,
    "publish/baseline": phase_publish_baseline,
    "publish/ours": phase_publish_ours,
    "serving/baseline": phase_serving_baseline,
    "serving/ours": phase_serving_ours,
}

BASELINE_NAMES = {
    "validation": "pyarrow read_table",
    "features": "DuckDB COPY of the view SQL",
    "training": "implicit fit + recommend(all users)",
    "publish": "insert_many of the same documents",
    "serving": "pymongo find_one loop",
}


def child_main(phase: str, work: Path, size_json: str, uri: str) -> None:
    """Entry point of a phase's child process: one JSON line on stdout."""
    import logging

    logging.basicConfig(level=logging.WARNING, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    for name in ("ingest", "features", "training", "serving", "bench"):
        logging.getLogger(name).setLevel(logging.INFO)
    result = PHASES[phase](work, Size(**json.loads(size_json)), uri)
    result["peak_rss_mib"] = _peak_rss_mib()
    print(json.dumps(result, default=str), flush=True)


# --------------------------------------------------------------------------- parent side

def _run_phase(phase: str, work: Path, size: Size, uri: str, log_file: Path) -> dict[str, Any]:
    cmd = [sys.executable, "-m", "bench.runner", phase, str(work), json.dumps(asdict(size)), uri]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(
        filter(None, [str(REPO), os.environ.get("PYTHONPATH")])),
        "GX_ANALYTICS_ENABLED": "False"}
    started = time.perf_counter()
    with log_file.open("a") as log:
        log.write(f"\n=== {phase} ({datetime.now(UTC).isoformat(timespec='seconds')})\n")
        log.flush()
        proc = subprocess.run(cmd, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=log,
                              text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"benchmark phase {phase} failed (status {proc.returncode}); "
                           f"see {log_file}")
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    result["process_seconds"] = time.perf_counter() - started
    return result


def _machine() -> dict[str, Any]:
    meminfo = Path("/proc/meminfo").read_text().splitlines()
    mem_kb = next(int(line.split()[1]) for line in meminfo if line.startswith("MemTotal:"))
    return {"cpus": os.cpu_count(), "memory_gib": round(mem_kb / 2**20, 1),
            "platform": platform.platform(), "python": platform.python_version(),
            "load_average_at_start": list(os.getloadavg())}


def _round(value: Any) -> Any:
    if isinstance(value, float):
        return round(value, 3)
    if isinstance(value, dict):
        return {k: _round(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_round(v) for v in value]
    return value


def summarize(results: dict[str, Any]) -> dict[str, Any]:
    """Per-stage ratios and the end-to-end figure from the measured phases."""
    phases = results["phases"]
    stages: dict[str, Any] = {}
    for stage in STAGES:
        ours, base = phases.get(f"{stage}/ours"), phases.get(f"{stage}/baseline")
        if not (ours and base):
            continue
        row = {"ours_seconds": ours["seconds"], "baseline_seconds": base["seconds"],
               "ours_peak_rss_mib": ours["peak_rss_mib"],
               "baseline_peak_rss_mib": base["peak_rss_mib"], "baseline": BASELINE_NAMES[stage]}
        if stage == "serving":
            row["ours_rps"], row["baseline_rps"] = ours["rps"], base["rps"]
            row["throughput_ratio"] = ours["rps"] / base["rps"]
        else:
            row["ratio"] = ours["seconds"] / base["seconds"]
        stages[stage] = row
    summary: dict[str, Any] = {"stages": stages}
    if all(s in stages for s in PIPELINE_STAGES):
        ours = sum(stages[s]["ours_seconds"] for s in PIPELINE_STAGES)
        base = sum(stages[s]["baseline_seconds"] for s in PIPELINE_STAGES)
        summary["end_to_end"] = {"ours_seconds": ours, "baseline_seconds": base,
                                 "ratio": ours / base, "target_ratio": 1.5,
                                 "peak_rss_mib": max(phases[f"{s}/ours"]["peak_rss_mib"]
                                                     for s in PIPELINE_STAGES)}
    return summary


def _throughput(stage: str, phase: dict[str, Any], size: dict[str, Any]) -> str:
    if stage == "serving":
        return f"{phase['rps']:,.0f} req/s"
    if stage == "publish":
        return f"{phase.get('documents', 0) / phase['seconds']:,.0f} docs/s" \
            if phase.get("documents") else ""
    return f"{size['interactions'] / phase['seconds'] / 1e6:,.2f} M interactions/s"


def _runs_line(results: dict[str, Any]) -> list[str]:
    """For results merged from partial runs (`--stage`): when each stage was measured."""
    if len(results.get("runs", [])) < 2:
        return []
    runs = "; ".join(
        f"{run['started_at']}: " + (run["stages"] if isinstance(run["stages"], str)
                                    else ", ".join(run["stages"]))
        + (f" (load {run['load_average_at_start'][0]:.1f})" if run.get("load_average_at_start")
           else "")
        for run in results["runs"])
    return ["", f"Merged from {len(results['runs'])} runs, each stage's two sides in the same "
                f"run: {runs}."]


def markdown(results: dict[str, Any]) -> str:
    """The table for docs/benchmarks.md."""
    size, summary, phases = results["size"], results["summary"], results["phases"]
    lines = [
        f"**{size['name']}**: {size['interactions']:,} interactions, {size['users']:,} users, "
        f"{size['items']:,} items; {results['machine']['cpus']} CPUs, "
        f"{results['machine']['memory_gib']} GiB; "
        f"{'latest run ' if len(results.get('runs', [])) > 1 else ''}started "
        f"{results['started_at']}; "
        + ("batch generated by an earlier run (reused)." if phases.get("generate", {}).get(
            "reused") else f"generation {phases['generate']['seconds']:.1f} s (not counted).")
        if "generate" in phases else f"**{size['name']}**",
        *_runs_line(results),
        "",
        "| stage | ours (s) | raw baseline | baseline (s) | ratio | ours peak RSS (MiB) | "
        "baseline peak RSS (MiB) | throughput (ours) |",
        "|---|---:|---|---:|---:|---:|---:|---|",
    ]
    for stage, row in summary["stages"].items():
        ratio = (f"{row['throughput_ratio']:.2f} (req/s)" if stage == "serving"
                 else f"{row['ratio']:.2f}")
        publish_docs = phases.get("publish/baseline", {}).get("documents")
        ours = dict(phases[f"{stage}/ours"], documents=publish_docs)
        lines.append(
            f"| {stage} | {row['ours_seconds']:.1f} | {row['baseline']} | "
            f"{row['baseline_seconds']:.1f} | {ratio} | {row['ours_peak_rss_mib']:,.0f} | "
            f"{row['baseline_peak_rss_mib']:,.0f} | {_throughput(stage, ours, size)} |")
    if "end_to_end" in summary:
        e2e = summary["end_to_end"]
        lines.append(
            f"| **end to end** (validation..publish) | **{e2e['ours_seconds']:.1f}** | sum of "
            f"the four | **{e2e['baseline_seconds']:.1f}** | **{e2e['ratio']:.2f}** "
            f"(target <= 1.5) | {e2e['peak_rss_mib']:,.0f} | | |")
    return "\n".join(lines) + "\n"


def run_benchmark(size: Size, *, work: Path | None = None, uri: str | None = None,
                  results_dir: Path = RESULTS_DIR, stages: tuple[str, ...] = STAGES,
                  keep: bool = False, echo: Any = print) -> dict[str, Any]:
    """Run the benchmark at `size`; write `<results_dir>/<size>.json` and `.md`; return them."""
    from recsys.mongo_server import EmbeddedMongo, free_port

    own_work = work is None
    work = Path(tempfile.mkdtemp(prefix=f"recsys-bench-{size.name}-")) if own_work \
        else Path(work)
    work.mkdir(parents=True, exist_ok=True)
    results_dir.mkdir(parents=True, exist_ok=True)
    json_path, md_path = results_dir / f"{size.name}.json", results_dir / f"{size.name}.md"
    log_file = work / "bench.log"
    results: dict[str, Any] = {
        "size": asdict(size), "seed": SEED, "started_at": datetime.now(UTC).isoformat(
            timespec="seconds"), "machine": _machine(), "work_dir": str(work),
        "command": f"recsys bench --size {size.name}", "stages": list(stages), "phases": {},
        "summary": {}}
    if set(stages) != set(STAGES) and json_path.exists():
        # A partial run (--stage) adds to the size's earlier results instead of replacing them.
        earlier = json.loads(json_path.read_text())
        if earlier.get("size") == asdict(size):
            results["phases"] = earlier.get("phases", {})
            results["runs"] = [*earlier.get("runs", [{"started_at": earlier.get("started_at"),
                                                      "stages": earlier.get("stages", "all")}])]
    if "runs" in results:
        results["runs"].append({"started_at": results["started_at"], "stages": list(stages),
                                "load_average_at_start": results["machine"][
                                    "load_average_at_start"]})
    server = None
    if uri is None:
        server = EmbeddedMongo(state_dir=work / "mongo", port=free_port(),
                               storage_path=work / "mongo" / "db")
        uri = server.start(wait_seconds=_settings(work, "").mongo_start_timeout_s).uri
    results["mongodb"] = "embedded secantusd-py" if server else "external"
    try:
        order = ["generate"] + [f"{s}/{side}" for s in STAGES if s in stages
                                for side in ("baseline", "ours")]
        for phase in order:
            echo(f"[{datetime.now(UTC).strftime('%H:%M:%S')}] {size.name}: {phase} ...")
            result = _run_phase(phase, work, size, uri, log_file)
            results["phases"][phase] = _round(result)
            results["summary"] = _round(summarize(results))
            json_path.write_text(json.dumps(results, indent=2) + "\n")
            echo(f"    {result['seconds']:.1f} s, peak {result['peak_rss_mib']:,.0f} MiB")
        results["finished_at"] = datetime.now(UTC).isoformat(timespec="seconds")
        json_path.write_text(json.dumps(results, indent=2) + "\n")
        md_path.write_text(markdown(results))
    finally:
        if server is not None:
            server.stop()
        if own_work and not keep:
            shutil.rmtree(work, ignore_errors=True)
    return results


if __name__ == "__main__":
    child_main(sys.argv[1], Path(sys.argv[2]), sys.argv[3], sys.argv[4])
