"""load_interactions: parquet file or directory -> sorted ids and a canonical CSR."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from recsys.errors import InputFileError, ModelError
from training.data import build_matrix, load_interactions
from training.evaluate import holdout_split


def write(path: Path, users, items, weights, **extra) -> Path:
    table = pa.table({"user_id": users, "item_id": items,
                      "weight": pa.array(weights, pa.float64()), **extra})
    pq.write_table(table, path)
    return path


def test_load_file_sorts_ids_and_sums_duplicates(tmp_path: Path) -> None:
    path = write(tmp_path / "x.parquet", ["b", "a", "b", "c", "b"], ["i2", "i1", "i2", "i1", "i10"],
                 [1.0, 2.0, 0.5, 3.0, 4.0], n_events=[1, 2, 3, 4, 5])
    data = load_interactions(path)
    assert data.user_ids.tolist() == ["a", "b", "c"] and data.user_ids.dtype == object
    assert data.item_ids.tolist() == ["i1", "i10", "i2"]
    m = data.matrix
    assert m.dtype == np.float32 and m.indices.dtype == np.int32 and m.indptr.dtype == np.int32
    assert m.has_sorted_indices and m.nnz == 4
    np.testing.assert_allclose(m.toarray(), [[2, 0, 0], [0, 4, 1.5], [3, 0, 0]])


def test_load_directory_of_files(tmp_path: Path) -> None:
    write(tmp_path / "part-0.parquet", ["u1", "u2"], ["a", "b"], [1.0, 1.0])
    write(tmp_path / "part-1.parquet", ["u1", "u3"], ["a", "c"], [2.0, 1.0])
    data = load_interactions(tmp_path)
    assert data.user_ids.tolist() == ["u1", "u2", "u3"]
    assert data.matrix[0, 0] == pytest.approx(3.0)
    assert data.n_interactions == 3


def test_matches_build_matrix(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    users = [f"u{i}" for i in rng.integers(0, 50, 500)]
    items = [f"i{i}" for i in rng.integers(0, 80, 500)]
    weights = rng.random(500) + 0.1
    loaded = load_interactions(write(tmp_path / "x.parquet", users, items, weights))
    built = build_matrix(np.array(users, dtype=object), np.array(items, dtype=object), weights)
    np.testing.assert_array_equal(loaded.user_ids, built.user_ids)
    np.testing.assert_array_equal(loaded.item_ids, built.item_ids)
    assert abs(loaded.matrix - built.matrix).max() == 0


def test_dictionary_encoded_ids_load_like_plain_ones(tmp_path: Path) -> None:
    """Ids read through parquet's dictionary pages, several row groups with their own
    dictionaries, a dictionary value no row uses and a null id: the same as plain strings."""
    rng = np.random.default_rng(1)
    users = [f"u{i}" for i in rng.integers(0, 60, 900)]
    items = [f"i{i}" for i in rng.integers(0, 90, 900)]
    weights = rng.random(900) + 0.1
    plain = tmp_path / "plain.parquet"
    write(plain, users, items, weights)
    encoded = tmp_path / "encoded.parquet"
    unused = pa.DictionaryArray.from_arrays(  # "zz" is in the dictionary, used by no row
        pa.array(np.unique(users, return_inverse=True)[1].astype(np.int32)),
        pa.array([*np.unique(users).tolist(), "zz"]))
    pq.write_table(pa.table({"user_id": unused, "item_id": items,
                             "weight": pa.array(weights, pa.float64())}),
                   encoded, row_group_size=100)
    expected, loaded = load_interactions(plain), load_interactions(encoded)
    assert "zz" not in loaded.user_ids
    np.testing.assert_array_equal(loaded.user_ids, expected.user_ids)
    np.testing.assert_array_equal(loaded.item_ids, expected.item_ids)
    assert abs(loaded.matrix - expected.matrix).max() == 0
    with_null = pa.DictionaryArray.from_arrays(pa.array([0, None, 1], pa.int32()),
                                               pa.array(["a", "b"]))
    pq.write_table(pa.table({"user_id": with_null, "item_id": ["x", "y", "z"],
                             "weight": [1.0, 1.0, 1.0]}), tmp_path / "null.parquet")
    with pytest.raises(InputFileError, match="null") as error:
        load_interactions(tmp_path / "null.parquet")
    assert error.value.column == "user_id"


@pytest.mark.parametrize(("weights", "rule"), [([1.0, 0.0], "positive"),
                                               ([1.0, float("nan")], "positive"),
                                               ([1.0, None], "not_null")])
def test_bad_weights_are_rejected(tmp_path: Path, weights, rule) -> None:
    path = write(tmp_path / "x.parquet", ["a", "b"], ["i", "j"], weights)
    with pytest.raises(InputFileError, match=rule):
        load_interactions(path)


def test_missing_column_and_missing_path(tmp_path: Path) -> None:
    path = tmp_path / "x.parquet"
    pq.write_table(pa.table({"user_id": ["a"], "item_id": ["i"]}), path)
    with pytest.raises(InputFileError, match="weight"):
        load_interactions(path)
    with pytest.raises(InputFileError, match="does not exist"):
        load_interactions(tmp_path / "nope")


def test_empty_file_is_rejected(tmp_path: Path) -> None:
    path = write(tmp_path / "x.parquet", pa.array([], pa.string()), pa.array([], pa.string()), [])
    with pytest.raises(InputFileError, match="no interactions"):
        load_interactions(path)


def timestamps(seconds, unit: str = "us", tz: str | None = "UTC") -> pa.Array:
    ticks = {"s": 1, "ms": 10**3, "us": 10**6, "ns": 10**9}[unit]
    return pa.array([None if s is None else s * ticks for s in seconds],
                    pa.int64()).cast(pa.timestamp(unit, tz=tz))


def test_last_ts_follows_the_csr_order_and_takes_the_latest_of_a_duplicate_pair(
        tmp_path: Path) -> None:
    # rows (b, i2) appear twice (times 100 and 300): the pair's time is 300
    path = write(tmp_path / "x.parquet", ["b", "a", "b", "c", "b"], ["i2", "i1", "i2", "i1", "i10"],
                 [1.0, 2.0, 0.5, 3.0, 4.0], last_ts=timestamps([100, 200, 300, 50, 400]))
    data = load_interactions(path, with_last_ts=True)
    # CSR order: (a, i1), (b, i10), (b, i2), (c, i1)
    np.testing.assert_allclose(data.matrix.data, [2.0, 4.0, 1.5, 3.0])
    assert data.last_ts.dtype == np.float64
    np.testing.assert_array_equal(data.last_ts, [200.0, 400.0, 300.0, 50.0])
    assert load_interactions(path).last_ts is None          # only read when asked for


@pytest.mark.parametrize(("unit", "tz"), [("ns", None), ("s", "Europe/Berlin"), ("ms", "UTC")])
def test_last_ts_matches_a_per_pair_maximum_for_any_unit(tmp_path: Path, unit: str, tz) -> None:
    rng = np.random.default_rng(1)
    users = [f"u{i}" for i in rng.integers(0, 30, 400)]
    items = [f"i{i}" for i in rng.integers(0, 12, 400)]       # many duplicate pairs
    seconds = rng.integers(1_600_000_000, 1_700_000_000, 400)
    path = write(tmp_path / "x.parquet", users, items, np.ones(400),
                 last_ts=timestamps(seconds.tolist(), unit, tz))
    data = load_interactions(path, with_last_ts=True)
    latest: dict[tuple[str, str], int] = {}
    for user, item, second in zip(users, items, seconds.tolist()):
        latest[user, item] = max(second, latest.get((user, item), second))
    coo = data.matrix.tocoo()                                  # CSR order
    expected = [latest[data.user_ids[r], data.item_ids[c]] for r, c in zip(coo.row, coo.col)]
    np.testing.assert_array_equal(data.last_ts, expected)
    built = build_matrix(np.array(users, dtype=object), np.array(items, dtype=object),
                         np.ones(400), last_ts=seconds)
    np.testing.assert_array_equal(built.last_ts, data.last_ts)


def test_missing_last_ts_keeps_the_random_split_and_fails_the_time_split(tmp_path: Path) -> None:
    path = write(tmp_path / "x.parquet", ["a", "a", "b"], ["i", "j", "i"], [1.0, 1.0, 1.0])
    data = load_interactions(path, with_last_ts=True)
    assert data.last_ts is None
    train, test, _ = holdout_split(data.matrix, 0.5, 0, split="random", last_ts=data.last_ts)
    assert train.nnz + test.nnz == 3
    with pytest.raises(ModelError, match="'last_ts' column"):
        holdout_split(data.matrix, 0.5, 0, split="time", last_ts=data.last_ts)


def test_null_last_ts_fails_the_time_split_and_a_non_timestamp_is_rejected(
        tmp_path: Path) -> None:
    path = write(tmp_path / "x.parquet", ["a", "a", "b"], ["i", "j", "i"], [1.0, 1.0, 1.0],
                 last_ts=timestamps([10, None, 30]))
    data = load_interactions(path, with_last_ts=True)
    assert np.isnan(data.last_ts).tolist() == [False, True, False]
    with pytest.raises(ModelError, match="1 user-item pair.*null 'last_ts'"):
        holdout_split(data.matrix, 0.5, 0, split="time", last_ts=data.last_ts)
    wrong = write(tmp_path / "y.parquet", ["a"], ["i"], [1.0], last_ts=["2024-01-01"])
    with pytest.raises(InputFileError, match="expected a timestamp"):
        load_interactions(wrong, with_last_ts=True)
