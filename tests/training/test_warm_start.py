"""One full fit instead of two (issue 14): the published model is fitted on all data starting
from the holdout model's factors, and is as good as the cold refit it replaces."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from tests.training.test_movielens_quality import load_ml100k
from training.data import InteractionMatrix
from training.evaluate import ranking_metrics, split_per_user, train_and_evaluate
from training.model import AlsParams, fit_als, recommend_top_n


class Recorder:
    def __init__(self) -> None:
        self.calls: dict[str, list[tuple[int, int]]] = {}

    def __call__(self, step: str, done: int, total: int) -> None:
        self.calls.setdefault(step, []).append((done, total))


def test_a_warm_start_continues_the_fit(checkerboard, small_params: AlsParams) -> None:
    """implicit keeps factors that are set: 4 sweeps then 6 warm ones == 10 sweeps."""
    params = AlsParams(**{**small_params.to_dict(), "iterations": 10})
    cold = fit_als(checkerboard, params)
    first = fit_als(checkerboard, params, iterations=4)
    before = first.user_factors.copy()
    warm = fit_als(checkerboard, params, init=first, iterations=6)
    np.testing.assert_array_equal(first.user_factors, before)   # the start model is untouched
    np.testing.assert_allclose(warm.user_factors, cold.user_factors, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(warm.item_factors, cold.item_factors, rtol=1e-4, atol=1e-5)


def test_the_refit_is_warm_started_with_few_sweeps(checkerboard, small_params) -> None:
    ids = np.array([f"id{i:02d}" for i in range(20)], dtype=object)
    data = InteractionMatrix(user_ids=ids, item_ids=ids.copy(), matrix=checkerboard)
    seen = Recorder()
    result = train_and_evaluate(data, small_params, k=3, refit_iterations=2, progress=seen)
    assert result.metrics["refit_iterations"] == 2
    assert seen.calls["ALS fit (holdout)"] == [(i, 15) for i in range(1, 16)]
    assert seen.calls["ALS fit (all data)"] == [(1, 2), (2, 2)]
    # never more sweeps than the parameters ask for
    assert train_and_evaluate(data, small_params, k=3, refit_iterations=50
                              ).metrics["refit_iterations"] == small_params.iterations
    # the model fitted on all data still learns the two groups
    recs, _ = recommend_top_n(result.model, checkerboard, 3)
    assert np.all(recs // 10 == (np.arange(20) // 10)[:, None])


@pytest.mark.movielens
def test_warm_started_model_is_as_good_as_a_cold_refit(movielens_dir: Path) -> None:
    """MovieLens 100K: hold out 20 % of each user's ratings as the *future*; on the other 80 %
    ("all data" of a run), compare the published model of the old path (a cold 15-sweep fit) with
    the new one (the holdout model warm-started for 3 sweeps) on that future."""
    data = load_ml100k(movielens_dir)
    params = AlsParams()  # the pipeline's defaults
    gaps = []
    for outer_seed in (1, 2):
        known, future = split_per_user(data.matrix, 0.2, outer_seed)
        run = InteractionMatrix(user_ids=data.user_ids, item_ids=data.item_ids, matrix=known)
        warm = train_and_evaluate(run, params, k=10, refit_iterations=3)
        cold = fit_als(known, params)

        def ndcg(model) -> float:
            recs, _ = recommend_top_n(model, known, 10)
            return ranking_metrics(recs, future, 10, n_items=data.n_items)["ndcg@10"]

        gaps.append(ndcg(warm.model) - ndcg(cold))
    # measured: -0.0005 and +0.0017 (cold-vs-cold with another seed moves it by about as much)
    assert np.mean(gaps) > -0.003 and min(gaps) > -0.005, gaps
