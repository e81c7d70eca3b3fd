"""`python -m bench dask-scaling`: the local-vs-Dask comparison, its table and each run's
environment (the runs themselves are the lead's, at medium size)."""

from __future__ import annotations

from pathlib import Path

import pytest

from bench.dask_scaling import compare, markdown, parse_args, run_scaling, runner_env
from bench.workspace import Size
from recsys.settings import load_settings


def _run(runner: str, seconds: float, timings: dict[str, float], *, partitions: int
         ) -> dict[str, object]:
    return {"seconds": seconds, "load_average_at_start": 1.5, "runner": runner, "dask_address": None, "dask_workers": 2,
            "partitions": partitions, "timings": timings, "peak_rss_mib": 500.0,
            "children_peak_rss_mib": 300.0, "als_metrics": {"ndcg@10": 0.2}}


RUNS = {
    "local": _run("local", 100.0, {"validate": 10.0, "features": 20.0, "train": 30.0,
                                   "score": 20.0, "gate": 1.0, "publish": 15.0}, partitions=1),
    "dask": _run("dask", 110.0, {"validate": 12.0, "features": 10.0, "train": 30.5,
                                 "score": 10.0, "gate": 1.0, "publish": 30.0}, partitions=4),
}


def test_compare_gives_each_stage_side_by_side_with_its_speedup() -> None:
    cmp = compare(RUNS)
    assert list(cmp["stages"]) == ["validate", "features", "train", "score", "gate", "publish"]
    assert cmp["stages"]["features"] == {"local": 20.0, "dask": 10.0, "speedup": 2.0}
    assert cmp["stages"]["publish"]["speedup"] == pytest.approx(0.5)
    assert cmp["stages_total"]["local"] == pytest.approx(96.0)
    assert cmp["stages_total"]["dask"] == pytest.approx(93.5)
    # cluster start/stop and the flow's own work fall outside the stages
    assert cmp["outside_stages"]["local"] == pytest.approx(4.0)
    assert cmp["outside_stages"]["dask"] == pytest.approx(16.5)
    assert cmp["flow"]["speedup"] == pytest.approx(100 / 110)


def test_the_table_says_where_dask_is_slower() -> None:
    results = {"size": {"name": "t", "interactions": 1000, "users": 10, "items": 5},
               "machine": {"cpus": 2, "load_average_at_start": [1.0, 1.0, 1.0]},
               "started_at": "now", "runs": RUNS, "comparison": compare(RUNS),
               "same_metrics": True}
    table = markdown(results)
    assert "a LocalCluster of 2 workers, 4 partitions" in table
    assert "load average 1.5 at the local run's start, 1.5 at the Dask run's" in table
    assert "| features | 20.0 | 10.0 | 2.00x | faster on Dask |" in table
    assert "| publish | 15.0 | 30.0 | 0.50x | **slower on Dask** |" in table
    assert "| train | 30.0 | 30.5 | 0.98x | about the same |" in table
    assert "| **flow wall time** | 100.0 | 110.0 | 0.91x | |" in table
    assert "Same ALS holdout metrics on both runners: yes." in table


def test_each_run_has_its_own_data_dir_database_and_runner(tmp_path: Path,
                                                           monkeypatch: pytest.MonkeyPatch
                                                           ) -> None:
    monkeypatch.setenv("RECSYS_PARTITIONS", "7")  # exported by the caller: must not leak
    local = runner_env("local", tmp_path, "mongodb://x", workers=2, partitions=8,
                       address=None)
    dask = runner_env("dask", tmp_path, "mongodb://x", workers=2, partitions=8, address=None)
    assert local["RECSYS_DATA_DIR"] != dask["RECSYS_DATA_DIR"]
    assert local["MONGODB_DB"] != dask["MONGODB_DB"]
    assert (local["RECSYS_TASK_RUNNER"], dask["RECSYS_TASK_RUNNER"]) == ("local", "dask")
    assert local["RECSYS_PARTITIONS"] is None and dask["RECSYS_PARTITIONS"] == "8"
    assert dask["RECSYS_DASK_ADDRESS"] is None  # no address: a LocalCluster for the run
    for env, runner, parts in ((local, "local", 1), (dask, "dask", 8)):
        with monkeypatch.context() as patch:  # the child's environment, as run_child builds it
            for name, value in env.items():
                if value is None:
                    patch.delenv(name, raising=False)
                else:
                    patch.setenv(name, value)
            settings = load_settings()
        assert (settings.task_runner, settings.partition_count) == (runner, parts)
        assert settings.data_dir == tmp_path / runner / "data"
    assert runner_env("dask", tmp_path, "mongodb://x", workers=2, partitions=None,
                      address="tcp://s:8786")["RECSYS_DASK_ADDRESS"] == "tcp://s:8786"


def test_command_line_defaults_to_medium_and_two_workers(tmp_path: Path) -> None:
    args = parse_args([])
    assert (args.size, args.workers, args.partitions, args.out) == ("medium", 2, None, None)
    args = parse_args(["--size", "small", "--out", str(tmp_path), "--partitions", "4"])
    assert (args.size, args.out, args.partitions) == ("small", tmp_path, 4)


@pytest.mark.integration
@pytest.mark.slow  # two whole pipeline runs (each with its Prefect server; one with a cluster)
def test_tiny_run_times_every_stage_on_both_runners(tmp_path: Path, mongo_uri: str) -> None:
    size = Size("tiny", interactions=20_000, users=800, items=300, serving_seconds=1)
    results = run_scaling(size, results_dir=tmp_path / "results", work=tmp_path / "work",
                          uri=mongo_uri, workers=2, echo=lambda _: None)
    assert sorted(p.name for p in (tmp_path / "results").iterdir()) == [
        "dask-scaling-tiny.json", "dask-scaling-tiny.md"]
    runs = results["runs"]
    assert (runs["local"]["runner"], runs["dask"]["runner"]) == ("local", "dask")
    assert (runs["local"]["partitions"], runs["dask"]["partitions"]) == (1, 4)
    for run in runs.values():
        assert run["published"] is True
        assert set(run["timings"]) >= {"validate", "features", "train", "score", "publish"}
    assert set(results["comparison"]["stages"]) == set(runs["local"]["timings"])
    assert isinstance(results["same_metrics"], bool)
    table = (tmp_path / "results" / "dask-scaling-tiny.md").read_text()
    assert all(f"| {stage} |" in table for stage in runs["local"]["timings"])
