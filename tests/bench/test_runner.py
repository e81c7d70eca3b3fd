"""`python -m bench run`: the stage runner on a tiny size against a real server, its summary,
and where it writes."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from bench.report import END_TO_END_TARGET, SERVING_TARGET, TARGETS, markdown, summarize
from bench.runner import _record, parse_args, phase_order, results_dir, run_benchmark
from bench.workspace import PIPELINE_STAGES, STAGES, Size
from recsys.settings import Settings

BENCH_DIR = Path(__file__).resolve().parents[2] / "bench"


def _package_files() -> set[Path]:
    return {p for p in BENCH_DIR.rglob("*") if "__pycache__" not in p.parts}


def _phase(seconds: float, rss: float = 100.0, **extra: float) -> dict[str, float]:
    return {"seconds": seconds, "peak_rss_mib": rss, **extra}


def test_summary_sums_the_pipeline_stages_and_keeps_serving_apart() -> None:
    results = {
        "size": {"name": "t", "interactions": 1000, "users": 10, "items": 5,
                 "serving_seconds": 1},
        "machine": {"cpus": 2, "memory_gib": 24.0}, "started_at": "now",
        "phases": {
            "generate": _phase(1.0),
            "validation/baseline": _phase(1.0), "validation/ours": _phase(4.0, 300.0),
            "features/baseline": _phase(10.0), "features/ours": _phase(11.0, 200.0),
            "training/baseline": _phase(20.0), "training/ours": _phase(25.0, 900.0),
            "publish/baseline": _phase(30.0, documents=300), "publish/ours": _phase(30.0),
            "serving/baseline": _phase(5.0, rps=500.0), "serving/ours": _phase(5.0, rps=400.0),
        },
    }
    summary = summarize(results)
    assert summary["stages"]["features"]["ratio"] == pytest.approx(1.1)
    assert summary["stages"]["serving"]["throughput_ratio"] == pytest.approx(0.8)
    e2e = summary["end_to_end"]
    assert (e2e["ours_seconds"], e2e["baseline_seconds"]) == (70.0, 61.0)
    assert e2e["ratio"] == pytest.approx(70 / 61)
    assert e2e["peak_rss_mib"] == 900.0
    table = markdown({**results, "summary": summary})
    assert "| **end to end** (validation..publish) | **70.0** |" in table
    assert "| publish | 30.0 | insert_many of the same documents | 30.0 | 1.00 | <= 1.1 | met |" \
        in table
    assert "10 docs/s" in table


def test_every_row_is_marked_against_issue_14s_target() -> None:
    assert TARGETS == {"validation": 2.0, "features": 1.3, "training": 1.2, "publish": 1.1}
    assert (END_TO_END_TARGET, SERVING_TARGET) == (1.2, 0.7)
    results = {
        "size": {"name": "t", "interactions": 1000, "users": 10, "items": 5,
                 "serving_seconds": 1},
        "machine": {"cpus": 2, "memory_gib": 24.0, "load_average_at_start": [1.5, 1, 1]},
        "started_at": "now",
        "phases": {
            "generate": _phase(0.5),
            "validation/baseline": _phase(1.0), "validation/ours": _phase(2.5),  # 2.5 > 2
            "features/baseline": _phase(10.0), "features/ours": _phase(13.0),  # at the target
            "training/baseline": _phase(20.0), "training/ours": _phase(23.0),
            "publish/baseline": _phase(30.0, documents=300), "publish/ours": _phase(34.0),
            "serving/baseline": _phase(5.0, rps=1000.0),
            "serving/ours": _phase(5.0, rps=650.0, connections=16, p50_ms=1.0, p99_ms=9.0),
        },
    }
    summary = summarize(results)
    met = {stage: (row["target"], row["met"]) for stage, row in summary["stages"].items()}
    assert met == {"validation": (2.0, False), "features": (1.3, True),
                   "training": (1.2, True), "publish": (1.1, False), "serving": (0.7, False)}
    assert summary["end_to_end"]["ratio"] == pytest.approx(72.5 / 61)
    assert (summary["end_to_end"]["target"], summary["end_to_end"]["met"]) == (1.2, True)
    table = markdown({**results, "summary": summary})
    assert "| validation | 2.5 | DuckDB COPY (SELECT * FROM <batch file>) TO parquet | 1.0 | " \
        "2.50 | <= 2 | **not met** |" in table
    assert "| features | 13.0 | DuckDB COPY of the view SQL | 10.0 | 1.30 | <= 1.3 | met |" \
        in table
    assert "| serving | 5.0 | the same server's /health under wrk | 5.0 | 0.65 (req/s) | " \
        ">= 0.7 | **not met** |" in table
    assert "| **1.19** | <= 1.2 | met |" in table
    assert "(load average 1.5)" in table
    assert "16 connections" in table


def test_summary_without_every_stage_has_no_end_to_end() -> None:
    results = {"phases": {"features/baseline": _phase(2.0), "features/ours": _phase(3.0)}}
    summary = summarize(results)
    assert list(summary["stages"]) == ["features"]
    assert "end_to_end" not in summary


def test_results_go_to_out_or_under_the_data_dir(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path / "data")
    assert results_dir(None, settings) == tmp_path / "data" / "bench"
    assert results_dir(tmp_path / "elsewhere", settings) == tmp_path / "elsewhere"
    args = parse_args(["--size", "medium", "--out", str(tmp_path / "o"), "--stage", "training",
                       "--stage", "publish"])
    assert (args.size, args.out, args.stage) == ("medium", tmp_path / "o",
                                                  ["training", "publish"])
    assert parse_args([]).out is None
    with pytest.raises(SystemExit):
        parse_args(["--stage", "nonsense"])


def test_phases_run_in_pipeline_order_baseline_first() -> None:
    assert phase_order(STAGES) == ["generate"] + [f"{stage}/{side}" for stage in STAGES
                                                  for side in ("baseline", "ours")]
    assert phase_order(("training", "features")) == [
        "generate", "features/baseline", "features/ours", "training/baseline", "training/ours"]


def test_repeats_interleave_the_two_sides() -> None:
    assert phase_order(("training", "publish"), repeat=2) == [
        "generate", "training/baseline", "training/ours", "training/baseline", "training/ours",
        "publish/baseline", "publish/ours", "publish/baseline", "publish/ours"]
    assert parse_args(["--repeat", "3"]).repeat == 3 and parse_args([]).repeat == 1
    with pytest.raises(SystemExit):
        parse_args(["--repeat", "0"])


def test_a_repeated_phase_keeps_its_median_run_and_every_run() -> None:
    phases: dict = {}
    for seconds, rss in ((5.0, 300.0), (3.0, 100.0), (4.0, 200.0)):
        _record(phases, "training/ours", _phase(seconds, rss, fit=seconds))
    kept = phases["training/ours"]
    assert (kept["seconds"], kept["fit"]) == (4.0, 4.0)
    assert kept["peak_rss_mib"] == 300.0  # the largest of all runs
    assert [run["seconds"] for run in kept["repeats"]] == [5.0, 3.0, 4.0]
    for rps in (900.0, 1000.0, 800.0, 950.0):  # serving: by req/s (wrk's seconds are fixed)
        _record(phases, "serving/ours", _phase(10.0, rps=rps, p99_ms=rps / 100))
    assert (phases["serving/ours"]["rps"], phases["serving/ours"]["p99_ms"]) == (900.0, 9.0)
    _record(phases, "features/ours", _phase(2.0))
    assert phases["features/ours"] == _phase(2.0)  # one run: no repeats list


def test_repeated_stage_reports_the_median_of_its_pairs_ratios() -> None:
    def repeated(*seconds: float) -> dict:
        runs = [_phase(s) for s in seconds]
        return {**sorted(runs, key=lambda r: r["seconds"])[(len(runs) - 1) // 2],
                "repeats": runs}

    # The machine slows down in the second pair: both sides alike, so that pair's ratio holds.
    results = {"phases": {"training/baseline": repeated(20.0, 30.0, 21.0),
                          "training/ours": repeated(23.0, 33.0, 27.0)}}
    row = summarize(results)["stages"]["training"]
    assert row["pair_ratios"] == pytest.approx([1.15, 1.1, 27 / 21])
    assert row["ratio"] == pytest.approx(1.15)
    assert (row["ours_seconds"], row["baseline_seconds"]) == (27.0, 21.0)  # each side's median
    table = markdown({"size": {"name": "t", "interactions": 1000}, "machine": {},
                      "started_at": "now", "phases": results["phases"],
                      "summary": summarize(results)})
    assert "| 1.15 (median of 3: 1.15, 1.10, 1.29) |" in table
    assert "not the quotient of the two sides' median seconds" in table


@pytest.mark.integration
@pytest.mark.slow  # ~35 s: four child processes, each importing GE; `make test-slow`
def test_repeat_reruns_a_stage_on_the_same_work_folder(tmp_path: Path, mongo_uri: str) -> None:
    size = Size("tiny", interactions=5_000, users=200, items=100, serving_seconds=1)
    results = run_benchmark(size, work=tmp_path / "work", uri=mongo_uri,
                            results_dir=tmp_path / "results", stages=("validation",), repeat=2,
                            echo=lambda _: None)
    for side in ("baseline", "ours"):
        runs = results["phases"][f"validation/{side}"]["repeats"]
        assert len(runs) == 2 and all(run["seconds"] > 0 for run in runs)
    assert [r["success"] for r in results["phases"]["validation/ours"]["repeats"]] == [True, True]
    row = results["summary"]["stages"]["validation"]
    assert len(row["pair_ratios"]) == 2 and min(row["pair_ratios"]) <= row["ratio"] \
        <= max(row["pair_ratios"])
    assert results["command"] == "python -m bench run --size tiny --stage validation --repeat 2"
    with pytest.raises(ValueError, match="repeat"):
        run_benchmark(size, results_dir=tmp_path / "r", uri=mongo_uri, repeat=0)


@pytest.mark.integration
@pytest.mark.slow  # ~35 s: every stage and its baseline in child processes; `make test-slow`
def test_tiny_run_measures_every_stage_beside_its_baseline(tmp_path: Path,
                                                           mongo_uri: str) -> None:
    stages = STAGES if shutil.which("wrk") else PIPELINE_STAGES
    size = Size("tiny", interactions=20_000, users=800, items=300, serving_seconds=1)
    before = _package_files()
    results = run_benchmark(size, work=tmp_path / "work", uri=mongo_uri,
                            results_dir=tmp_path / "results", stages=stages,
                            echo=lambda _: None)

    # Results go to the given folder only: nothing new inside the bench package.
    assert sorted(p.name for p in (tmp_path / "results").iterdir()) == ["tiny.json", "tiny.md"]
    assert _package_files() == before
    saved = json.loads((tmp_path / "results" / "tiny.json").read_text())
    assert saved["phases"].keys() == results["phases"].keys()
    assert set(saved["summary"]["stages"]) == set(stages)
    phases = saved["phases"]
    assert phases["validation/ours"]["success"] is True
    assert phases["validation/baseline"]["rows"] == sum(phases["validation/ours"]["rows"]
                                                        .values())
    assert phases["features/ours"]["rows"]["interactions"] > 0
    n_users, n_items = phases["training/baseline"]["shape"]
    assert phases["publish/ours"]["counts"]["users"] == n_users
    assert phases["publish/ours"]["counts"]["items"] == n_items
    assert phases["publish/ours"]["active_version"] == "bench"
    # the version's serving documents, then one online feature document per user and per item
    assert phases["publish/baseline"]["documents"] == (2 * n_users + 2 * n_items + 1
                                                       + n_users + n_items)
    assert phases["training/ours"]["metrics"]["als"]["ndcg@10"] > 0
    for phase in phases.values():
        assert phase["seconds"] >= 0 and phase["peak_rss_mib"] > 0
    if "serving" in stages:
        assert phases["serving/ours"]["errors"] == 0
        assert phases["serving/ours"]["requests"] > 0
    e2e = saved["summary"]["end_to_end"]
    assert e2e["ours_seconds"] == pytest.approx(
        sum(phases[f"{s}/ours"]["seconds"] for s in PIPELINE_STAGES), abs=0.01)
    table = (tmp_path / "results" / "tiny.md").read_text()
    assert all(f"| {stage} |" in table for stage in stages)
