"""load_interactions: parquet file or directory -> sorted ids and a canonical CSR."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from recsys.errors import InputFileError
from training.data import build_matrix, load_interactions


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
