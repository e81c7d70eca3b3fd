"""Batched explanations and fold-in against implicit's own per-user methods."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp

from recsys.errors import ModelError
from tests.training.helpers import make_checkerboard
from training.data import to_csr
from training.explain import explain_recommendations, fold_in_users
from training.model import AlsParams, apply_weighting, fit_als, recommend_top_n


def random_matrix(seed: int = 0, n_users: int = 60, n_items: int = 40) -> sp.csr_matrix:
    rng = np.random.default_rng(seed)
    dense = (rng.random((n_users, n_items)) < rng.random((n_users, 1)) * 0.6).astype(np.float32)
    dense *= rng.integers(1, 6, size=dense.shape)
    dense[:, 0] += dense.sum(axis=1) == 0          # every user has at least one item
    dense[3] = 0
    dense[3, 7] = 2.0                              # a user with a single past item
    return to_csr(sp.csr_matrix(dense))


@pytest.mark.parametrize("weighting", ["raw", "log1p"])
@pytest.mark.parametrize("max_cells", [10_000_000, 5_000])   # one batch / many small batches
def test_explanations_match_implicit_explain(weighting: str, max_cells: int) -> None:
    matrix = random_matrix()
    params = AlsParams(factors=6, regularization=2.0, alpha=3.0, iterations=5, seed=1,
                       weighting=weighting)
    model = fit_als(matrix, params)
    recs, _ = recommend_top_n(model, matrix, 5)
    weighted = apply_weighting(matrix, weighting)
    items, scores = explain_recommendations(model.item_factors, to_csr(weighted * params.alpha),
                                            recs, regularization=params.regularization,
                                            n_explain=3, max_cells=max_cells)
    assert items.shape == scores.shape == (60, 5, 3)
    assert items.dtype == np.int32 and scores.dtype == np.float32
    for user in (0, 3, 17, 59):
        for j in (0, 4):
            _, top, _ = model.explain(user, weighted, int(recs[user, j]), N=3)
            expected_items = [int(i) for i, _ in top]
            n = len(expected_items)
            assert items[user, j, :n].tolist() == expected_items
            np.testing.assert_allclose(scores[user, j, :n], [s for _, s in top], rtol=1e-4,
                                       atol=1e-6)
            assert np.all(items[user, j, n:] == -1)          # short history is padded
    # every explaining item is one of the user's past items
    for user in range(60):
        valid = items[user][items[user] >= 0]
        assert set(valid.tolist()) <= set(matrix[user].indices.tolist())
    assert np.all(items[3, :, 1:] == -1) and np.all(items[3, :, 0] == 7)


def test_padded_recommendations_get_no_explanation() -> None:
    matrix = to_csr(make_checkerboard())
    model = fit_als(matrix, AlsParams(factors=2, regularization=0.1, alpha=5.0, iterations=5))
    recs = np.full((20, 2), -1, dtype=np.int32)
    recs[:, 0] = 0
    items, scores = explain_recommendations(model.item_factors, matrix, recs, regularization=0.1,
                                            n_explain=2)
    assert np.all(items[:, 1] == -1) and np.all(scores[:, 1] == 0.0)
    assert np.all(items[:, 0, 0] >= 0)
    with pytest.raises(ModelError):
        explain_recommendations(model.item_factors, matrix, recs[:5], regularization=0.1,
                                n_explain=2)
    with pytest.raises(ModelError):
        explain_recommendations(model.item_factors, matrix, recs, regularization=0.1,
                                n_explain=0)


def test_fold_in_matches_recalculate_user() -> None:
    matrix = random_matrix(seed=4)
    params = AlsParams(factors=5, regularization=1.0, alpha=2.0, iterations=5, seed=2)
    model = fit_als(matrix, params)
    users = fold_in_users(model.item_factors, to_csr(matrix * params.alpha),
                          regularization=params.regularization, max_cells=3_000)
    expected = model.recalculate_user(np.arange(60), matrix)
    np.testing.assert_allclose(users, expected, rtol=1e-3, atol=1e-5)
    empty = to_csr(sp.csr_matrix((2, matrix.shape[1]), dtype=np.float32))
    assert np.all(fold_in_users(model.item_factors, empty, regularization=1.0) == 0)
