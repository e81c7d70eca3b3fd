"""Metrics against hand-computed values, split properties, popularity baseline."""

from __future__ import annotations

import math

import numpy as np
import pytest
import scipy.sparse as sp

from recsys.errors import ModelError
from training.data import InteractionMatrix, to_csr
from training.evaluate import (
    _grouped_order,
    evaluation_users,
    holdout_split,
    popularity_recommendations,
    ranking_metrics,
    split_per_user,
    split_per_user_by_time,
    train_and_evaluate,
)
from training.model import (
    AlsParams,
    fit_als,
    item_popularity,
    popularity_order,
    recommend_top_n,
)


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


@pytest.mark.parametrize("k", [1, 5, 40])
def test_popularity_recommendations_match_a_per_user_reference(k: int) -> None:
    matrix = _random_matrix()
    counts, weights = item_popularity(matrix)
    ranking = popularity_order(counts, weights)
    expected = np.full((matrix.shape[0], k), -1, dtype=np.int32)
    for user in range(matrix.shape[0]):
        seen = set(matrix.indices[matrix.indptr[user]:matrix.indptr[user + 1]].tolist())
        unseen = [item for item in ranking.tolist() if item not in seen][:k]
        expected[user, :len(unseen)] = unseen
    np.testing.assert_array_equal(popularity_recommendations(matrix, k), expected)


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


def csr_values(dense: np.ndarray, matrix: sp.csr_matrix) -> np.ndarray:
    """dense[u, i] for every non-zero (u, i) of `matrix`, in the order of `matrix.data`."""
    rows = np.repeat(np.arange(matrix.shape[0]), np.diff(matrix.indptr))
    return np.asarray(dense)[rows, matrix.indices]


# Last-event times of the pairs of TIME_WEIGHTS (0 where there is no pair).
TIME_WEIGHTS = np.array([[1, 2, 3, 4, 0, 0],     # 4 items: 3 stay in train
                         [0, 1, 0, 0, 5, 2],     # 3 items: round(2.25) = 2 stay
                         [0, 0, 7, 0, 0, 0],     # 1 item: stays in train
                         [0, 0, 0, 0, 0, 0],     # no items
                         [3, 0, 0, 0, 1, 0],     # 2 items: round(1.5) = 2 stay (half to even)
                         [1, 1, 1, 1, 0, 0]])    # 4 items, two tied for latest
TIME_SECONDS = np.array([[40, 10, 30, 20, 0, 0],
                         [0, 5, 0, 0, 7, 6],
                         [0, 0, 99, 0, 0, 0],
                         [0, 0, 0, 0, 0, 0],
                         [8, 0, 0, 0, 9, 0],
                         [10, 20, 20, 5, 0, 0]], dtype=np.float64)


def test_time_split_holds_out_each_users_latest_items() -> None:
    matrix = csr(TIME_WEIGHTS)
    last_ts = csr_values(TIME_SECONDS, matrix)
    train, test, train_last_ts = split_per_user_by_time(matrix, last_ts, 0.25, seed=0)

    held_out = test.toarray() > 0
    np.testing.assert_array_equal(held_out[:5], [[1, 0, 0, 0, 0, 0],    # time 40
                                                 [0, 0, 0, 0, 1, 0],    # time 7
                                                 [0, 0, 0, 0, 0, 0],
                                                 [0, 0, 0, 0, 0, 0],
                                                 [0, 0, 0, 0, 0, 0]])
    assert held_out[5].sum() == 1 and (held_out[5, 1] or held_out[5, 2])  # one of the tied 20s
    assert train.multiply(test).nnz == 0 and abs(train + test - matrix).max() == 0
    np.testing.assert_array_equal(train_last_ts, csr_values(TIME_SECONDS, train))
    # the same per-user counts as the random split
    random_train, random_test = split_per_user(matrix, 0.25, seed=0)
    np.testing.assert_array_equal(np.diff(train.indptr), np.diff(random_train.indptr))
    np.testing.assert_array_equal(np.diff(test.indptr), np.diff(random_test.indptr))


def test_time_split_breaks_ties_with_the_seed() -> None:
    matrix = csr(TIME_WEIGHTS)
    last_ts = csr_values(TIME_SECONDS, matrix)
    held_out_of_tied_user = set()
    for seed in range(20):
        _, test, _ = split_per_user_by_time(matrix, last_ts, 0.25, seed=seed)
        _, again, _ = split_per_user_by_time(matrix, last_ts, 0.25, seed=seed)
        assert (test != again).nnz == 0                        # deterministic for a seed
        held_out_of_tied_user.add(int(test[5].indices[0]))
    assert held_out_of_tied_user == {1, 2}                     # not always the same item


def _dense_times(matrix: sp.csr_matrix, last_ts: np.ndarray) -> np.ndarray:
    times = np.zeros(matrix.shape)
    times[np.repeat(np.arange(matrix.shape[0]), np.diff(matrix.indptr)), matrix.indices] = last_ts
    return times


def test_time_split_on_random_data_never_tests_an_earlier_pair() -> None:
    matrix = _random_matrix()
    rng = np.random.default_rng(4)
    last_ts = rng.integers(0, 50, matrix.nnz).astype(np.float64)   # coarse: many ties
    train, test, train_last_ts = split_per_user_by_time(matrix, last_ts, 0.3, seed=2)
    assert train.multiply(test).nnz == 0 and abs(train + test - matrix).max() == 0
    test_last_ts = csr_values(_dense_times(matrix, last_ts), test)
    for user in range(matrix.shape[0]):
        user_train = train_last_ts[train.indptr[user]:train.indptr[user + 1]]
        user_test = test_last_ts[test.indptr[user]:test.indptr[user + 1]]
        if len(user_test):
            assert user_train.max() <= user_test.min()
    random_train, _ = split_per_user(matrix, 0.3, seed=2)
    np.testing.assert_array_equal(np.diff(train.indptr), np.diff(random_train.indptr))


def test_holdout_split_dispatches_and_rejects_bad_input() -> None:
    matrix = csr(TIME_WEIGHTS)
    last_ts = csr_values(TIME_SECONDS, matrix)
    train, test, train_last_ts = holdout_split(matrix, 0.25, 3, split="random", last_ts=last_ts)
    expected_train, expected_test = split_per_user(matrix, 0.25, seed=3)
    assert (train != expected_train).nnz == 0 and (test != expected_test).nnz == 0
    assert train_last_ts is None
    time_train, _, _ = holdout_split(matrix, 0.25, 3, split="time", last_ts=last_ts)
    assert (time_train != split_per_user_by_time(matrix, last_ts, 0.25, seed=3)[0]).nnz == 0
    with pytest.raises(ModelError, match="'last_ts' column"):
        holdout_split(matrix, 0.25, 3, split="time")
    with pytest.raises(ModelError, match="shape"):
        holdout_split(matrix, 0.25, 3, split="time", last_ts=last_ts[1:])
    with pytest.raises(ModelError, match="unknown holdout split"):
        holdout_split(matrix, 0.25, 3, split="chrono", last_ts=last_ts)


def test_train_and_evaluate_records_the_split(checkerboard, small_params: AlsParams) -> None:
    ids = np.array([f"u{i:02d}" for i in range(20)], dtype=object)
    last_ts = np.random.default_rng(0).random(checkerboard.nnz)
    data = InteractionMatrix(user_ids=ids, item_ids=ids.copy(), matrix=checkerboard,
                             last_ts=last_ts)
    assert train_and_evaluate(data, small_params, k=3).metrics["holdout_split"] == "random"
    timed = train_and_evaluate(data, small_params, k=3, split="time")
    assert timed.metrics["holdout_split"] == "time"
    # the ALS metrics are those of a model fitted on the time split's train part
    train, test, _ = split_per_user_by_time(checkerboard, last_ts, 0.25, small_params.seed)
    recs, _ = recommend_top_n(fit_als(train, small_params), train, 3)
    assert timed.metrics["als"] == pytest.approx(ranking_metrics(recs, test, 3, n_items=20))
    untimed = InteractionMatrix(user_ids=ids, item_ids=ids.copy(), matrix=checkerboard)
    with pytest.raises(ModelError, match="last_ts"):
        train_and_evaluate(untimed, small_params, k=3, split="time")


def test_grouped_order_is_lexsorts_on_both_paths() -> None:
    rng = np.random.default_rng(5)
    rows = np.sort(rng.integers(0, 50, 2000))
    keys = rng.random(2000)
    expected = np.lexsort((keys, rows))
    np.testing.assert_array_equal(_grouped_order(rows, (keys,)), expected)  # the float path
    tied = np.round(keys, 1)  # ties: the float path refuses, lexsort keeps the input order
    np.testing.assert_array_equal(_grouped_order(rows, (tied,)), np.lexsort((tied, rows)))
    near_one = np.full(2000, 1.0 - 2.0 ** -53)  # rounds up into the next row as a float sum
    np.testing.assert_array_equal(_grouped_order(rows, (near_one,)),
                                  np.lexsort((near_one, rows)))
    second = rng.random(2000)
    np.testing.assert_array_equal(_grouped_order(rows, (keys, second)),
                                  np.lexsort((keys, second, rows)))
