"""Model contract on a checkerboard, padding, self-exclusion, determinism, popularity."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp
from implicit.cpu.als import AlternatingLeastSquares

from recsys.errors import ModelError
from tests.training.helpers import group_of
from training.data import to_csr
from training.model import (
    AlsParams,
    apply_weighting,
    fit_als,
    popular_items,
    recommend_top_n,
    similar_items_top_n,
)


def test_params_defaults_and_dict() -> None:
    p = AlsParams()
    assert p.to_dict() == {"factors": p.factors, "regularization": p.regularization,
                           "alpha": p.alpha, "iterations": p.iterations, "seed": p.seed,
                           "weighting": "raw"}
    with pytest.raises(ModelError):
        AlsParams(factors=0)
    with pytest.raises(ModelError, match="weighting"):
        AlsParams(weighting="sqrt")


@pytest.mark.parametrize("weighting", ["raw", "log1p", "bm25", "binary"])
def test_apply_weighting_keeps_the_pattern(weighting) -> None:
    matrix = to_csr(sp.csr_matrix(np.array([[1, 0, 4], [0, 2, 0], [3, 5, 0]], dtype=np.float32)))
    out = apply_weighting(matrix, weighting)
    assert out.dtype == np.float32 and out.indices.dtype == np.int32
    np.testing.assert_array_equal(out.indptr, matrix.indptr)
    np.testing.assert_array_equal(out.indices, matrix.indices)
    assert np.all(out.data > 0)
    expected = {"raw": matrix.data, "log1p": np.log1p(matrix.data),
                "binary": np.ones(matrix.nnz)}.get(weighting)
    if expected is not None:
        np.testing.assert_allclose(out.data, expected, rtol=1e-6)


def test_recommendations_stay_in_the_users_group(checkerboard, small_params) -> None:
    model = fit_als(checkerboard, small_params)
    items, scores = recommend_top_n(model, checkerboard, 3, batch_size=7)
    assert items.shape == scores.shape == (20, 3)
    assert items.dtype == np.int32 and scores.dtype == np.float32
    assert np.all(items >= 0)
    users = np.arange(20)[:, None]
    assert np.all(group_of(items) == group_of(users))
    assert checkerboard[users, items].nnz == 0                 # nothing already seen
    assert np.all(np.diff(scores, axis=1) <= 0)                # best first


def test_recommend_top_n_is_implicits_recommend() -> None:
    """The fast path (implicit's topk with the seen items read straight from the CSR arrays,
    candidates rescored in float64) returns what `model.recommend(...,
    filter_already_liked_items=True)` returns, scores to the last float32 bit."""
    rng = np.random.default_rng(3)
    matrix = to_csr(sp.random(700, 150, density=0.08, random_state=rng, dtype=np.float32) * 4)
    model = fit_als(matrix, AlsParams(factors=8, iterations=3, regularization=1.0))
    users = np.sort(rng.choice(700, size=333, replace=False)).astype(np.int32)
    expected_items, expected_scores = model.recommend(users, matrix[users], N=20,
                                                      filter_already_liked_items=True)
    items, scores = recommend_top_n(model, matrix, 20, users=users, batch_size=100)
    np.testing.assert_array_equal(items, expected_items)
    np.testing.assert_allclose(scores, expected_scores, rtol=1e-6, atol=1e-7)


def test_similar_items_stay_in_the_items_group(checkerboard, small_params) -> None:
    model = fit_als(checkerboard, small_params)
    items, scores = similar_items_top_n(model, 3, batch_size=6)
    assert items.shape == scores.shape == (20, 3)
    assert not np.any(items == np.arange(20)[:, None])         # never the item itself
    assert np.all(group_of(items) == group_of(np.arange(20))[:, None])
    assert np.all(np.diff(scores, axis=1) <= 1e-6)


def test_recommend_pads_when_few_items_are_left(checkerboard, small_params) -> None:
    dense = checkerboard.toarray()
    dense[0] = 1.0
    dense[0, [4, 15]] = 0.0           # user 0 has seen 18 of 20 items
    dense[1] = 1.0                    # user 1 has seen everything
    matrix = to_csr(sp.csr_matrix(dense))
    model = fit_als(matrix, small_params)
    items, scores = recommend_top_n(model, matrix, 5)
    assert sorted(items[0, :2].tolist()) == [4, 15]
    np.testing.assert_array_equal(items[0, 2:], -1)
    np.testing.assert_array_equal(scores[0, 2:], 0.0)
    np.testing.assert_array_equal(items[1], -1)
    assert np.all(np.isfinite(scores))
    # asking for more than the catalogue
    items, scores = recommend_top_n(model, matrix, 25)
    assert items.shape == (20, 25)
    assert np.all(items[2:, :14] >= 0) and np.all(items[:, 20:] == -1)


def test_similar_items_pads_when_catalogue_is_small(checkerboard, small_params) -> None:
    model = fit_als(checkerboard, small_params)
    items, _ = similar_items_top_n(model, 25)
    assert items.shape == (20, 25)
    assert np.all(items[:, :19] >= 0) and np.all(items[:, 19:] == -1)
    for i in range(20):
        assert sorted(items[i, :19].tolist()) == [j for j in range(20) if j != i]


def test_similar_items_drops_self_when_it_is_not_first() -> None:
    # items 0 and 1 have identical factors: both have cosine 1.0 with each other, so the item
    # itself may come second; it must be dropped wherever it is.
    model = AlternatingLeastSquares(factors=2, random_state=0)
    model.item_factors = np.array([[1, 0], [1, 0], [0, 1], [1, 1]], dtype=np.float32)
    model.user_factors = np.zeros((1, 2), dtype=np.float32)
    items, scores = similar_items_top_n(model, 2)
    assert items[0, 0] == 1 and items[1, 0] == 0
    assert scores[0, 0] == pytest.approx(1.0) and scores[1, 0] == pytest.approx(1.0)
    assert not np.any(items == np.arange(4)[:, None])
    assert items[0, 1] == 3 and items[1, 1] == 3


def test_recommend_rejects_mismatched_shapes(checkerboard, small_params) -> None:
    model = fit_als(checkerboard, small_params)
    with pytest.raises(ModelError, match="users"):
        recommend_top_n(model, checkerboard[:10], 3)
    with pytest.raises(ModelError, match="items"):
        recommend_top_n(model, to_csr(checkerboard[:, :10]), 3)
    with pytest.raises(ModelError, match="csr_matrix"):
        recommend_top_n(model, sp.csr_array(checkerboard), 3)


def test_fit_rejects_bad_input(small_params) -> None:
    with pytest.raises(ModelError, match="empty"):
        fit_als(to_csr(sp.csr_matrix((3, 4))), small_params)
    with pytest.raises(ModelError, match="float32"):
        fit_als(sp.csr_matrix(np.eye(3)), small_params)


@pytest.mark.parametrize("num_threads", [1, 0])
def test_fit_is_deterministic_for_a_seed(checkerboard, small_params, num_threads) -> None:
    a = fit_als(checkerboard, small_params, num_threads=num_threads)
    b = fit_als(checkerboard, small_params, num_threads=num_threads)
    np.testing.assert_array_equal(a.user_factors, b.user_factors)
    np.testing.assert_array_equal(a.item_factors, b.item_factors)
    assert a.user_factors.dtype == np.float32
    c = fit_als(checkerboard, AlsParams(**{**small_params.to_dict(), "seed": 8}))
    assert not np.array_equal(a.item_factors, c.item_factors)


def test_popular_items_by_distinct_users_then_weight() -> None:
    matrix = to_csr(sp.csr_matrix(np.array([[1, 9, 0, 0, 0],
                                            [1, 0, 1, 0, 0],
                                            [1, 0, 1, 0, 0],
                                            [0, 0, 0, 0, 4]], dtype=np.float32)))
    items, scores = popular_items(matrix, 10)
    np.testing.assert_array_equal(items, [0, 2, 1, 4])    # item 3 has no users: left out
    np.testing.assert_array_equal(scores, [3, 2, 1, 1])   # item 1 (weight 9) before 4 (weight 4)
    assert items.dtype == np.int32 and scores.dtype == np.float32
    items, _ = popular_items(matrix, 2)
    np.testing.assert_array_equal(items, [0, 2])
