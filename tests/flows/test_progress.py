"""Progress on long work (issue 16): the plain functions report each chunk, view, iteration and
batch to an optional callback, and `flows.progress` draws them as rich bars only on a terminal."""

from __future__ import annotations

import io
import uuid
from collections import defaultdict
from pathlib import Path

import numpy as np
import pytest
import scipy.sparse as sp
from rich.console import Console

from features.stage import build_features_as_of
from flows.progress import progress_bars
from ingest.stage import ingest_batch
from recsys.datagen import generate_batch
from recsys.settings import Settings
from serving.publish import publish_model
from training.model import AlsParams, fit_als, recommend_top_n
from training.stage import score_run_model, train_run_model


class Recorder:
    """A progress callback that keeps every call, per step."""

    def __init__(self) -> None:
        self.calls: dict[str, list[tuple[int, int | None]]] = defaultdict(list)

    def __call__(self, step: str, done: int, total: int | None) -> None:
        self.calls[step].append((done, total))


def _matrix(users: int = 25, items: int = 12, seed: int = 0) -> sp.csr_matrix:
    rng = np.random.default_rng(seed)
    dense = (rng.random((users, items)) < 0.3).astype(np.float32)
    dense[:, 0] = 1  # no empty row or column
    dense[0, :] = 1
    return sp.csr_matrix(dense)


def test_als_reports_every_iteration_and_every_batch() -> None:
    matrix, seen = _matrix(), Recorder()
    model = fit_als(matrix, AlsParams(factors=4, iterations=5), num_threads=1, progress=seen,
                    step="fit")
    recommend_top_n(model, matrix, 3, batch_size=10, progress=seen, step="recs")
    assert seen.calls["fit"] == [(i, 5) for i in range(1, 6)]
    assert seen.calls["recs"] == [(10, 25), (20, 25), (25, 25)]


def test_no_callback_no_change() -> None:
    matrix = _matrix()
    params = AlsParams(factors=4, iterations=3)
    quiet = fit_als(matrix, params, num_threads=1)
    told = fit_als(matrix, params, num_threads=1, progress=Recorder())
    assert np.array_equal(quiet.user_factors, told.user_factors)


@pytest.mark.integration
def test_each_stage_reports_its_progress(tmp_path: Path, mongo_uri: str) -> None:
    """ingest (once per validated chunk) -> features (per view) -> train (per iteration)
    -> score (per batch) -> publish (per written batch)."""
    settings = Settings(data_dir=tmp_path / "data", mongodb_uri=mongo_uri,
                        mongodb_db=f"test_{uuid.uuid4().hex[:12]}", validate_chunk_rows=300,
                        validation_data_docs=False, iterations=3, top_n=5, similar_n=5,
                        publish_batch_size=40)
    batch = generate_batch(tmp_path / "in", users=60, items=30, interactions=1000, seed=3)
    seen = Recorder()

    ingest_batch(batch.directory, run_id="run-1", settings=settings, progress=seen)
    assert seen.calls["validate users"] == [(60, 60)]  # whole tables: once each
    assert seen.calls["validate items"] == [(30, 30)]
    assert seen.calls["validate interactions"] == [(300, 1000), (600, 1000), (900, 1000),
                                                   (1000, 1000)]  # once per chunk

    manifest = build_features_as_of(None, snapshot_id="run-1", settings=settings,
                                    progress=seen)
    assert seen.calls["build features"] == [(1, 3), (2, 3), (3, 3)]

    model_dir, _ = train_run_model(manifest, version="run-1", settings=settings,
                                   search=False, progress=seen)
    assert seen.calls["ALS fit (holdout)"] == [(1, 3), (2, 3), (3, 3)]
    assert seen.calls["ALS fit (all data)"] == [(1, 3), (2, 3), (3, 3)]
    assert seen.calls["evaluate"][-1][0] == seen.calls["evaluate"][-1][1]

    score_run_model(model_dir, manifest, settings=settings, progress=seen)
    users = seen.calls["score users"][-1][1]
    assert users and seen.calls["score users"] == [(users, users)]  # one batch of 10,000
    assert seen.calls["similar items"][-1] == (30, 30)

    result = publish_model(settings, "run-1", progress=seen)
    assert result.written
    recs = seen.calls["publish recs"]
    # the user partitions write elsewhere: their progress is polled, then the total
    assert recs[-1] == (users, users) and recs == sorted(recs)
    assert all(total == users for _, total in recs)
    for kind in ("similar", "popular", "user_embeddings", "item_embeddings"):
        assert seen.calls[f"publish {kind}"][-1][0] == seen.calls[f"publish {kind}"][-1][1]
    assert seen.calls["write users features"][-1] == (60, 60)
    assert seen.calls["write items features"][-1] == (30, 30)


def test_bars_are_drawn_per_step() -> None:
    out = io.StringIO()
    console = Console(file=out, force_terminal=True, width=100)
    with progress_bars(console) as progress:
        assert progress is not None
        for done in (100, 200, 250):
            progress("validate interactions", done, 250)
        progress("ALS fit (all data)", 15, 15)
    text = out.getvalue()
    assert "validate interactions" in text and "250/250" in text
    assert "ALS fit (all data)" in text and "15/15" in text


def test_no_bars_without_a_terminal(capsys: pytest.CaptureFixture[str]) -> None:
    with progress_bars() as progress:  # pytest captures stderr: not a terminal
        assert progress is None
    assert capsys.readouterr().err == ""
