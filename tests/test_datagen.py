import pandas as pd
import pyarrow.parquet as pq
import pytest

from recsys.datagen import generate_batch


def test_generate_is_deterministic_and_skewed(tmp_path):
    a = generate_batch(tmp_path / "a", users=300, items=200, interactions=20_000, seed=7)
    b = generate_batch(tmp_path / "b", users=300, items=200, interactions=20_000, seed=7)
    for name in ("users", "items", "interactions"):
        assert pq.read_table(a.directory / f"{name}.parquet").equals(
            pq.read_table(b.directory / f"{name}.parquet"))
    inter = pd.read_parquet(a.directory / "interactions.parquet")
    assert len(inter) == 20_000
    assert inter["user_id"].nunique() == 300  # everyone has at least one interaction
    counts = inter["item_id"].value_counts()
    # power-law popularity: the top 10% of items take far more than 10% of interactions
    assert counts.iloc[: len(counts) // 10].sum() > 0.3 * len(inter)
    assert inter["rating"].between(1, 5).all()
    items = pd.read_parquet(a.directory / "items.parquet")
    assert items["item_id"].is_unique and items["genres"].map(len).min() >= 1


def test_generate_differs_by_seed_and_writes_csv(tmp_path):
    a = generate_batch(tmp_path / "a", users=50, items=40, interactions=500, seed=1, fmt="csv")
    b = generate_batch(tmp_path / "b", users=50, items=40, interactions=500, seed=2, fmt="csv")
    first = (a.directory / "interactions.csv").read_text()
    assert first != (b.directory / "interactions.csv").read_text()
    items = pd.read_csv(a.directory / "items.csv")
    assert items["genres"].str.len().min() > 0  # "|"-joined genres


def test_generate_rejects_fewer_interactions_than_users(tmp_path):
    with pytest.raises(ValueError, match="at least one interaction per user"):
        generate_batch(tmp_path, users=10, items=5, interactions=5)
