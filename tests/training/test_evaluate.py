"""Metrics against hand-computed values, split properties, popularity baseline."""

from __future__ import annotations

import math

import numpy as np
import pytest
import scipy.sparse as sp

from recsys.errors import ModelError
from training.data import InteractionMatrix, to_csr
from training.evaluate import (
    evaluation_users,
    popularity_recommendations,
    ranking_metrics,
    split_per_user,
    train_and_evaluate,
)
from training.model import AlsParams, fit_als, recommend_top_n


def csr(dense) -> sp.csr_matrix:
    return to_csr(sp.csr_matrix(np.asarray(dense, dtype=np.float32)))


def test_ranking_metrics_hand_computed_two_users() -> None:
    # user 0: recs [0, 1, 2], relevant {1, 4}: one hit at rank 2
    # user 1: recs [3, 5, 0], relevant {0, 3}: hits at ranks 1 and 3
    # user 2: no test items -> not evaluated
    test = csr([[0, 1, 0, 0, 1, 0],
                [1, 0, 0, 1, 0, 0],
                [0, 0, 0, 0, 0, 0]])
    recs = np.array([[0, 1, 2], [3, 5, 0], [-1, -1, -1]])
    m = ranking_metrics(recs, test, 3, n_items=6)

    idcg2 = 1 + 1 / math.log2(3)
    ndcg0 = (1 / math.log2(3)) / idcg2
    ndcg1 = (1 + 1 / math.log2(4)) / idcg2
    ap0 = (1 / 2) / 2
    ap1 = (1 / 1 + 2 / 3) / 2
    assert m["users"] == 2
    assert m["precision@3"] == pytest.approx((1 / 3 + 2 / 3) / 2)
    assert m["recall@3"] == pytest.approx((1 / 2 + 2 / 2) / 2)
    assert m["ndcg@3"] == pytest.approx((ndcg0 + ndcg1) / 2)
    assert m["map"] == pytest.approx((ap0 + ap1) / 2)
    assert m["coverage"] == pytest.approx(5 / 6)


def test_map_divides_by_all_relevant_not_min_k() -> None:
    # 5 relevant items, k=3, all 3 recommendations hit.
    test = csr([[1, 1, 1, 1, 1, 0]])
    m = ranking_metrics(np.array([[0, 1, 2]]), test, 3, n_items=6)
    assert m["precision@3"] == pytest.approx(1.0)
    assert m["recall@3"] == pytest.approx(3 / 5)
    assert m["ndcg@3"] == pytest.approx(1.0)  # ideal DCG over min(|rel|, k) = 3 positions
    assert m["map"] == pytest.approx(3 / 5)


def test_precision_divides_by_k_even_when_list_is_padded() -> None:
    test = csr([[1, 0, 0, 0]])
    m = ranking_metrics(np.array([[0, -1, -1, -1]]), test, 4, n_items=4)
    assert m["precision@4"] == pytest.approx(1 / 4)
    assert m["recall@4"] == pytest.approx(1.0)
    assert m["coverage"] == pytest.approx(1 / 4)


def test_ranking_metrics_rejects_row_mismatch_and_short_lists() -> None:
    test = csr([[1, 0], [0, 1]])
    with pytest.raises(ModelError):
        ranking_metrics(np.array([[0, 1]]), test, 2, n_items=2)
    with pytest.raises(ModelError):
        ranking_metrics(np.array([[0], [1]]), test, 2, n_items=2)


def test_ranking_metrics_with_no_test_users() -> None:
    m = ranking_metrics(np.array([[0, 1]]), csr([[0, 0]]), 2, n_items=2)
    assert m["users"] == 0 and m["precision@2"] == 0.0


def _random_matrix(seed: int = 3) -> sp.csr_matrix:
    rng = np.random.default_rng(seed)
    dense = (rng.random((60, 40)) < rng.random((60, 1)) * 0.5).astype(np.float32)
    dense *= rng.integers(1, 6, size=dense.shape)
    dense[0] = 0                      # user with no items
    dense[1] = 0
    dense[1, 5] = 2.0                 # user with one item
    dense[2] = 0
    dense[2, [3, 7]] = 1.0            # user with two items
    return csr(dense)


def test_split_per_user_properties() -> None:
    matrix = _random_matrix()
    train, test = split_per_user(matrix, 0.25, seed=11)
    assert train.shape == test.shape == matrix.shape
    assert train.dtype == test.dtype == np.float32
    assert train.multiply(test).nnz == 0                       # disjoint
    assert abs(train + test - matrix).max() == 0               # union (with weights) == original
    n = np.diff(matrix.indptr)
    n_train, n_test = np.diff(train.indptr), np.diff(test.indptr)
    assert np.all(n_train[n >= 1] >= 1)                        # every active user keeps >= 1
    assert n_train[1] == 1 and n_test[1] == 0                  # a single item stays in train
    np.testing.assert_array_equal(n_train, np.where(n > 0, np.maximum(np.rint(0.75 * n), 1), 0))
    assert test.nnz / matrix.nnz == pytest.approx(0.25, abs=0.03)


def test_split_per_user_is_seeded() -> None:
    matrix = _random_matrix()
    a, _ = split_per_user(matrix, 0.25, seed=1)
    b, _ = split_per_user(matrix, 0.25, seed=1)
    c, _ = split_per_user(matrix, 0.25, seed=2)
    assert (a != b).nnz == 0
    assert (a != c).nnz > 0


def test_split_per_user_keeps_one_train_item_at_high_fractions() -> None:
    matrix = _random_matrix()
    train, _ = split_per_user(matrix, 0.99, seed=0)
    n = np.diff(matrix.indptr)
    assert np.all(np.diff(train.indptr)[n >= 1] == 1)


def test_popularity_recommendations_excludes_seen_items_and_pads() -> None:
    # item popularity (distinct users): item0=3, item1=2 (weight 2), item2=2 (weight 10), item3=1
    train = csr([[1, 1, 0, 0],
                 [1, 0, 5, 0],
                 [1, 1, 5, 1]])
    recs = popularity_recommendations(train, 3)
    assert recs.dtype == np.int32 and recs.shape == (3, 3)
    np.testing.assert_array_equal(recs[0], [2, 3, -1])     # ties by summed weight: 2 before 1
    np.testing.assert_array_equal(recs[1], [1, 3, -1])
    np.testing.assert_array_equal(recs[2], [-1, -1, -1])   # has seen everything


def test_popularity_recommendations_batches_agree() -> None:
    matrix = _random_matrix()
    np.testing.assert_array_equal(popularity_recommendations(matrix, 5),
                                  popularity_recommendations(matrix, 5, max_cells=7))


def test_train_and_evaluate_on_checkerboard(checkerboard, small_params: AlsParams) -> None:
    ids = np.array([f"u{i:02d}" for i in range(20)], dtype=object)
    data = InteractionMatrix(user_ids=ids, item_ids=ids.copy(), matrix=checkerboard)
    result = train_and_evaluate(data, small_params, k=3, holdout_fraction=0.25)
    m = result.metrics
    assert set(m) >= {"als", "popular", "k", "holdout_fraction", "n_users", "n_items",
                      "n_interactions"}
    assert m["k"] == 3 and m["n_users"] == 20 and m["n_interactions"] == checkerboard.nnz
    for name in ("als", "popular"):
        assert set(m[name]) == {"precision@3", "recall@3", "ndcg@3", "map", "coverage", "users"}
        assert m[name]["users"] == 20
    # ALS recommends within the user's group, popularity across both: ALS must win here.
    assert m["als"]["precision@3"] > m["popular"]["precision@3"]
    # the published model is refitted on all data
    assert result.model.user_factors.shape == (20, small_params.factors)
    assert result.params == small_params


def test_evaluation_users_samples_deterministically_only_above_the_cap() -> None:
    assert evaluation_users(1000, None, seed=1) is None
    assert evaluation_users(1000, 1000, seed=1) is None
    sample = evaluation_users(1000, 100, seed=1)
    assert sample is not None and len(sample) == 100 and len(np.unique(sample)) == 100
    assert np.all(np.diff(sample) > 0) and sample.min() >= 0 and sample.max() < 1000
    assert np.array_equal(sample, evaluation_users(1000, 100, seed=1))
    assert not np.array_equal(sample, evaluation_users(1000, 100, seed=2))


def test_sampled_evaluation_scores_exactly_the_sampled_users(small_params: AlsParams) -> None:
    rng = np.random.default_rng(5)
    dense = (rng.random((300, 60)) < 0.15) * rng.integers(1, 6, size=(300, 60))
    matrix = csr(dense)
    data = InteractionMatrix(matrix=matrix, user_ids=np.arange(300).astype(str),
                             item_ids=np.arange(60).astype(str))
    full = train_and_evaluate(data, small_params, k=3, holdout_fraction=0.25)
    sampled = train_and_evaluate(data, small_params, k=3, holdout_fraction=0.25,
                                 max_eval_users=120)
    assert sampled.metrics["max_eval_users"] == 120
    assert sampled.metrics["als"]["users"] <= 120 < full.metrics["als"]["users"]
    # the same model on the same split: the sample's metrics equal the full recs restricted to it
    train, test = split_per_user(matrix, 0.25, seed=small_params.seed)
    sample = evaluation_users(300, 120, small_params.seed)
    model = fit_als(train, small_params)
    recs, _ = recommend_top_n(model, train, 3)
    expected = ranking_metrics(recs[sample], test[sample], 3, n_items=60)
    assert sampled.metrics["als"] == pytest.approx(expected)
    sampled_recs, _ = recommend_top_n(model, train, 3, users=sample)
    assert np.array_equal(sampled_recs, recs[sample])
