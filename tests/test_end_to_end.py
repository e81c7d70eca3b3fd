"""End to end: a real secantusd-py, the Prefect flow, and the API over HTTP in its own process."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from pymongo import MongoClient
from recsys.datagen import generate_batch
from recsys.mongo_server import free_port
from recsys.movielens import import_movielens

pytestmark = pytest.mark.integration


@pytest.fixture
def pipeline_env(monkeypatch, tmp_path, mongo_uri, mongo_db_name, prefect_harness) -> dict:
    env = {"MONGODB_URI": mongo_uri, "MONGODB_DB": mongo_db_name,
           "RECSYS_DATA_DIR": str(tmp_path / "data"), "RECSYS_TOP_N": "20",
           "RECSYS_ITERATIONS": "8"}
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    return env


def run_pipeline(input_dir: Path, env: dict) -> tuple[int, str]:
    """`recsys pipeline` in its own process, reporting to the test harness's Prefect API."""
    from prefect.settings import PREFECT_API_URL

    proc = subprocess.run(
        [sys.executable, "-m", "recsys", "pipeline", "--input", str(input_dir)],
        env={**os.environ, **env, "PREFECT_API_URL": PREFECT_API_URL.value()},
        capture_output=True, text=True, timeout=600,
    )
    return proc.returncode, proc.stdout + proc.stderr


def active_version(env: dict) -> str | None:
    with MongoClient(env["MONGODB_URI"]) as client:
        doc = client[env["MONGODB_DB"]]["serving_state"].find_one({"_id": "active"})
    return doc["version"] if doc else None


@pytest.fixture
def api(pipeline_env) -> Iterator[str]:
    """`recsys serve` in a separate process on a free port; yields its base URL."""
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "recsys", "serve", "--port", str(port)],
        env={**os.environ, **pipeline_env}, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"{base}/health", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                time.sleep(0.3)
        else:
            pytest.fail("API did not start: " + proc.stdout.read().decode()[-2000:])
        yield base
    finally:
        proc.terminate()
        proc.wait(10)


def wait_ready(base: str) -> None:
    deadline = time.monotonic() + 10
    while httpx.get(f"{base}/ready").status_code != 200:
        assert time.monotonic() < deadline, "API never became ready"
        time.sleep(0.2)


def test_generated_batch_end_to_end(pipeline_env, api, tmp_path):
    batch = generate_batch(tmp_path / "batch", users=300, items=150, interactions=15_000, seed=3)
    code, output = run_pipeline(batch.directory, pipeline_env)
    assert code == 0, output
    assert "published and activated model version" in output
    version = active_version(pipeline_env)
    assert version is not None and version in output

    wait_ready(api)
    recs = httpx.get(f"{api}/users/u0000001/recommendations", params={"k": 5}).json()
    assert recs["model_version"] == version and recs["source"] == "personalized"
    assert [item["rank"] for item in recs["items"]] == [1, 2, 3, 4, 5]
    scores = [item["score"] for item in recs["items"]]
    assert scores == sorted(scores, reverse=True)
    seen = set(__import__("pandas").read_parquet(batch.directory / "interactions.parquet")
               .query("user_id == 'u0000001'")["item_id"])
    assert not seen & {item["item_id"] for item in recs["items"]}

    cold = httpx.get(f"{api}/users/nobody/recommendations", params={"k": 3}).json()
    assert cold["source"] == "popular" and len(cold["items"]) == 3
    similar = httpx.get(f"{api}/items/i000001/similar", params={"k": 4}).json()
    assert len(similar["items"]) == 4
    assert "i000001" not in {item["item_id"] for item in similar["items"]}
    assert httpx.get(f"{api}/items/nope/similar").status_code == 404
    assert httpx.get(f"{api}/users/u0000001/recommendations", params={"k": 0}).status_code == 422

    # A broken batch fails at validation, is quarantined, and changes nothing that is served.
    broken = tmp_path / "broken"
    broken.mkdir()
    for name in ("users", "items"):
        (broken / f"{name}.parquet").write_bytes((batch.directory / f"{name}.parquet").read_bytes())
    (broken / "interactions.csv").write_text(
        "user_id,item_id,timestamp,rating\nu0000001,i000001,not-a-time,4\n"
        "ghost,i000001,1700000000,4\n")
    code, output = run_pipeline(broken, pipeline_env)
    assert code != 0
    assert "validate" in output and "interactions" in output
    assert active_version(pipeline_env) == version
    quarantined = list((Path(pipeline_env["RECSYS_DATA_DIR"]) / "quarantine").iterdir())
    assert len(quarantined) == 1 and (quarantined[0] / "report.json").exists()
    again = httpx.get(f"{api}/users/u0000001/recommendations", params={"k": 5}).json()
    assert again == recs


@pytest.mark.slow  # the generated batch above runs the same path; quality: test_movielens_quality
@pytest.mark.movielens
def test_movielens_end_to_end(pipeline_env, api, movielens_dir, tmp_path, monkeypatch):
    monkeypatch.delenv("RECSYS_ITERATIONS")
    pipeline_env = {k: v for k, v in pipeline_env.items() if k != "RECSYS_ITERATIONS"}
    batch = import_movielens(movielens_dir, tmp_path / "ml100k")
    started = time.perf_counter()
    code, output = run_pipeline(batch.directory, pipeline_env)
    elapsed = time.perf_counter() - started
    assert code == 0, output
    print(f"\nMovieLens 100K pipeline: {elapsed:.1f}s\n{output}")
    version = active_version(pipeline_env)
    wait_ready(api)
    recs = httpx.get(f"{api}/users/1/recommendations", params={"k": 10}).json()
    assert recs["model_version"] == version and len(recs["items"]) == 10
    similar = httpx.get(f"{api}/items/1/similar", params={"k": 5}).json()  # Toy Story
    assert len(similar["items"]) == 5
