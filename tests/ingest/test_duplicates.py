"""`KeyHashes`: duplicate keys over chunks exactly as pandas' ``duplicated(keep=False)`` finds
them in the whole table, whatever the chunking and the text column's dtype."""

import numpy as np
import pandas as pd
import pytest

from ingest.duplicates import KeyHashes, row_key_hashes


def _table(rows: int, seed: int) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    users = np.array([f"u{i}" for i in range(40)] + ["é", ""], dtype=object)
    frame = pd.DataFrame({
        "user_id": users[rng.integers(0, len(users), rows)],
        "item_id": np.array([f"i{i}" for i in range(15)], dtype=object)[
            rng.integers(0, 15, rows)],
        "timestamp": rng.integers(0, 4, rows),
    })
    frame.loc[rng.random(rows) < 0.05, "user_id"] = None
    frame.loc[rng.random(rows) < 0.05, "item_id"] = None
    return frame


def _expected(frame: pd.DataFrame) -> np.ndarray:
    """GE's pandas verdict: every copy of a repeated key, rows with an all-null key left out."""
    considered = ~frame.isna().all(axis=1)
    found = np.zeros(len(frame), dtype=bool)
    found[considered.to_numpy()] = frame[considered].duplicated(keep=False).to_numpy()
    return found


@pytest.mark.parametrize("dtype", ["str", "object"])
@pytest.mark.parametrize("chunk", [1, 7, 300, 10_000])
def test_duplicates_across_chunks_match_pandas(dtype, chunk):
    frame = _table(2_000, seed=chunk).astype({"user_id": dtype, "item_id": dtype})
    hashes = KeyHashes(["user_id", "item_id", "timestamp"], capacity=100)
    for start in range(0, len(frame), chunk):
        hashes.add(frame.iloc[start:start + chunk])
    found = hashes.duplicated()
    assert found.any() and not found.all()
    np.testing.assert_array_equal(found, _expected(frame))


def test_a_text_hashes_alike_in_every_chunk_and_dtype():
    """The value alone decides its hashes: a plain string column, an object column, a chunk
    where it is rare or frequent, with or without nulls around it."""
    a = pd.DataFrame({"k": pd.Series(["x", "y", "x", None], dtype="str")})
    b = pd.DataFrame({"k": pd.Series(["y"] * 5 + ["x"], dtype=object)})
    first_a, second_a, _ = row_key_hashes(a, ["k"])
    first_b, second_b, _ = row_key_hashes(b, ["k"])
    assert (first_a[0], second_a[0]) == (first_b[5], second_b[5])
    assert (first_a[1], second_a[1]) == (first_b[0], second_b[0])
    assert first_a[0] != first_a[1] and second_a[0] != second_a[1]
    assert first_a[0] != second_a[0]  # two keys: two different hashes of one value


def test_number_like_text_compares_as_a_number_under_numeric_text():
    hashes = KeyHashes(["k"], numeric_text=True)
    hashes.add(pd.DataFrame({"k": [1.0, 2.0]}))
    hashes.add(pd.DataFrame({"k": pd.Series(["1", "b", None, "b"], dtype="str")}))
    np.testing.assert_array_equal(hashes.duplicated(), [True, False, True, True, False, True])
