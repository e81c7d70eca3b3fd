"""The benchmark runner: every pipeline stage beside its raw baseline, at one of three sizes.

    python -m bench run --size small     # 100k interactions, a minute or two
    python -m bench run --size medium    # 5M interactions
    python -m bench run --size large     # 50M interactions, 1M users, 100k items (hours on 2 cores)
    python -m bench run --size medium --stage training --repeat 3   # the median of 3 pairs

It generates a batch deterministically (`recsys.datagen.generate_batch`, seed 42), then runs the
stage functions the pipeline flow's tasks call, in order, each stage's output feeding the next,
and measures each beside the raw baseline the stage replaces, on the same data, in the same run:

| stage      | ours (the pipeline's code)                   | raw baseline (target)             |
|------------|----------------------------------------------|-----------------------------------|
| validation | `ingest.stage.ingest_batch`: read, GE, write | DuckDB `COPY (SELECT * FROM       |
|            | into the raw store                           | <batch file>) TO parquet` (<= 2x) |
| features   | `features.stage.build_features_as_of`: every | DuckDB `COPY (view SQL)`          |
|            | view over the raw store                      | (<= 1.3x)                         |
| training   | `training.stage`: train (with evaluation),   | bare implicit `fit` +             |
|            | top-N, similar items, explanations           | `recommend(all users)` (<= 1.2x)  |
| publish    | `serving.publish.publish_model`: write,      | `insert_many` of the same         |
|            | verify, online features, switch              | documents (<= 1.1x)               |
| serving    | the API (uvicorn, 1 worker, cache on) under  | the same server's `/health`       |
|            | `wrk`, 16 connections: user recommendations  | under `wrk` (req/s >= 0.7x)       |

Every measurement runs in a fresh child process (`bench.phases.*`, see `bench.child_process`),
which reports its wall time and its own peak RSS (`VmHWM`), so no phase inherits another's
memory or warm caches. Results go to `<out>/<size>.json` after each phase (a run cut short keeps
what it measured) and, at the end, a markdown table to `<out>/<size>.md`; `<out>` is `--out`,
by default `<RECSYS_DATA_DIR>/bench`; nothing is written inside the checkout's packages. "End
to end" is the sum of our pipeline stages (validation .. publish) against the sum of their
baselines (target <= 1.2x); serving is a throughput ratio and is reported apart. Every row says
whether it meets issue 14's target (`bench.report.TARGETS`).

MongoDB: an embedded `secantusd-py` under the work directory, or `--uri` (e.g. a real mongod).
"""

from __future__ import annotations

import argparse
import json
import shutil
from collections.abc import Callable
from dataclasses import asdict
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench.child_process import run_child
from bench.report import markdown, round_floats, summarize
from bench.workspace import SEED, SIZES, STAGES, Size, machine_info, mongodb, work_folder
from recsys.settings import Settings, load_settings

# The child module that measures each stage, both sides.
STAGE_MODULES = {
    "generate": "bench.phases.generate_batch",
    "validation": "bench.phases.validate_batch",
    "features": "bench.phases.build_features",
    "training": "bench.phases.train_model",
    "publish": "bench.phases.publish_version",
    "serving": "bench.phases.serve_recommendations",
}


def phase_order(stages: tuple[str, ...], repeat: int = 1) -> list[str]:
    """The phases a run measures, in order: `generate`, then each stage's baseline and ours,
    that pair `repeat` times over (interleaved, so a change in the machine's speed hits both
    sides alike)."""
    return ["generate"] + [f"{stage}/{side}" for stage in STAGES if stage in stages
                           for _ in range(repeat) for side in ("baseline", "ours")]


def _record(phases: dict[str, Any], phase: str, result: dict[str, Any]) -> None:
    """Keep `result` as `phase`'s result. With repeats, keep the median run (the lower of the
    middle two for an even count) by what the stage's ratio reads (req/s for serving, else
    seconds), with the largest peak RSS of all runs, and list every run under `repeats`."""
    earlier = phases.get(phase)
    runs = [*(earlier.get("repeats") or [earlier]), result] if earlier else [result]
    if len(runs) == 1:
        phases[phase] = result
        return
    key = "rps" if "rps" in result else "seconds"
    by_measure = sorted(runs, key=lambda run: run[key])
    median = {k: v for k, v in by_measure[(len(by_measure) - 1) // 2].items() if k != "repeats"}
    median["peak_rss_mib"] = max(run["peak_rss_mib"] for run in runs)
    phases[phase] = {**median, "repeats": [{k: v for k, v in run.items() if k != "repeats"}
                                           for run in runs]}


def _merge_earlier(results: dict[str, Any], json_path: Path, size: Size) -> None:
    """A partial run (--stage) adds to the size's earlier results instead of replacing them."""
    if not json_path.exists():
        return
    earlier = json.loads(json_path.read_text())
    if earlier.get("size") != asdict(size):
        return
    results["phases"] = earlier.get("phases", {})
    results["runs"] = [*earlier.get("runs", [{"started_at": earlier.get("started_at"),
                                              "stages": earlier.get("stages", "all")}])]
    results["runs"].append({"started_at": results["started_at"], "stages": results["stages"],
                            "load_average_at_start": results["machine"]["load_average_at_start"]})


def run_benchmark(size: Size, *, results_dir: Path, work: Path | None = None,
                  uri: str | None = None, stages: tuple[str, ...] = STAGES, keep: bool = False,
                  repeat: int = 1, echo: Callable[[str], Any] = print) -> dict[str, Any]:
    """Run the benchmark at `size`; write `<results_dir>/<size>.json` and `.md`; return them.

    Args:
        size: the generated batch's shape (`SIZES`).
        results_dir: where the results go (created when missing).
        work: the work folder (default: a temp dir, removed afterwards unless `keep`).
        uri: an existing MongoDB (default: an embedded secantusd-py in the work folder).
        stages: the stages to measure; a subset merges into the size's earlier results.
        keep: keep the temp work folder.
        repeat: how many times each stage's pair of sides runs; its ratio is then the median
            of the pairs' ratios (`bench.report.summarize`).
        echo: progress lines go here.

    Raises:
        RuntimeError: a phase failed (its log is in `<work>/bench.log`), or the serving stage
            is asked for and `wrk` is not installed.
    """
    if repeat < 1:
        raise ValueError("repeat must be >= 1")
    if "serving" in stages and shutil.which("wrk") is None:  # fail before hours of work
        raise RuntimeError("the serving stage needs wrk (apt-get install wrk); without it, "
                           "measure the other stages with --stage")
    results_dir.mkdir(parents=True, exist_ok=True)
    json_path, md_path = results_dir / f"{size.name}.json", results_dir / f"{size.name}.md"
    with work_folder(work, prefix=f"recsys-bench-{size.name}-", keep=keep) as work_dir, \
            mongodb(work_dir, uri) as mongo_uri:
        log_file = work_dir / "bench.log"
        results: dict[str, Any] = {
            "size": asdict(size), "seed": SEED, "started_at": datetime.now(UTC).isoformat(
                timespec="seconds"), "machine": machine_info(), "work_dir": str(work_dir),
            "command": f"python -m bench run --size {size.name}"
                       + ("" if set(stages) == set(STAGES)
                          else "".join(f" --stage {stage}" for stage in stages))
                       + (f" --repeat {repeat}" if repeat > 1 else ""), "stages": list(stages),
            "mongodb": "external" if uri else "embedded secantusd-py", "phases": {},
            "summary": {}}
        if set(stages) != set(STAGES):
            _merge_earlier(results, json_path, size)
        measured: set[str] = set()  # this run's phases (the merged ones are earlier runs')
        for phase in phase_order(stages, repeat):
            echo(f"[{datetime.now(UTC).strftime('%H:%M:%S')}] {size.name}: {phase} ...")
            stage, _, side = phase.partition("/")
            result = run_child(STAGE_MODULES[stage], [side or stage, str(work_dir),
                                                      size.to_json(), mongo_uri],
                               log_file=log_file)
            if phase not in measured:
                results["phases"].pop(phase, None)
                measured.add(phase)
            _record(results["phases"], phase, round_floats(result))
            results["summary"] = round_floats(summarize(results))
            json_path.write_text(json.dumps(results, indent=2) + "\n")
            echo(f"    {result['seconds']:.1f} s, peak {result['peak_rss_mib']:,.0f} MiB")
        results["finished_at"] = datetime.now(UTC).isoformat(timespec="seconds")
        json_path.write_text(json.dumps(results, indent=2) + "\n")
        md_path.write_text(markdown(results))
    return results


def _positive(text: str) -> int:
    """An argparse type: an integer >= 1."""
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The `python -m bench run` command line."""
    parser = argparse.ArgumentParser(
        prog="python -m bench run",
        description="Run every pipeline stage beside its raw baseline on generated data.")
    parser.add_argument("--size", choices=sorted(SIZES), default="small",
                        help="small (100k interactions), medium (5M) or large (50M, 1M users, "
                             "100k items)")
    parser.add_argument("--out", type=Path, default=None,
                        help="where <size>.json and <size>.md go (default: "
                             "<RECSYS_DATA_DIR>/bench)")
    parser.add_argument("--work", type=Path, default=None,
                        help="work folder (default: a temp dir, removed afterwards unless "
                             "--keep)")
    parser.add_argument("--stage", action="append", choices=STAGES, default=None,
                        help="only this stage (repeatable); merges into the size's earlier "
                             "results")
    parser.add_argument("--uri", default=None,
                        help="an existing MongoDB (default: an embedded secantusd-py in the "
                             "work folder)")
    parser.add_argument("--keep", action="store_true", help="keep the temp work folder")
    parser.add_argument("--repeat", type=_positive, default=1,
                        help="run each stage's two sides this many times, interleaved, and "
                             "report the median of the pairs' ratios")
    return parser.parse_args(argv)


def results_dir(out: Path | None, settings: Settings) -> Path:
    """`--out`, or `<data_dir>/bench` of the given settings."""
    return out if out is not None else settings.data_dir / "bench"


def main(argv: list[str] | None = None) -> None:
    """`python -m bench run`: run the benchmark and print its markdown table."""
    args = parse_args(argv)
    out = results_dir(args.out, load_settings())
    try:
        results = run_benchmark(SIZES[args.size], results_dir=out, work=args.work, uri=args.uri,
                                stages=tuple(args.stage) if args.stage else STAGES,
                                keep=args.keep, repeat=args.repeat)
    except RuntimeError as error:
        raise SystemExit(f"error: {error}") from None
    print(f"\nresults: {out / args.size}.json, {out / args.size}.md\n")
    print(markdown(results))


if __name__ == "__main__":
    main()
