"""Helpers for the feature-store tests: normalized raw batches with known timestamps."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

INTERACTION_SCHEMA = pa.schema([
    ("user_id", pa.string()), ("item_id", pa.string()),
    ("timestamp", pa.timestamp("us", tz="UTC")), ("rating", pa.float64()),
    ("weight", pa.float64()), ("event_type", pa.string()),
])


def write_raw_batch(out_dir: Path, *, users: dict[str, list], items: dict[str, list],
                    interactions: dict[str, list]) -> dict[str, Path]:
    """Write a normalized batch (the validate stage's output format) and return its paths."""
    out_dir.mkdir(parents=True, exist_ok=True)
    n = len(interactions["user_id"])
    full = {"rating": [None] * n, "weight": [None] * n, "event_type": [None] * n, **interactions}
    tables = {
        "users": pa.table(users),
        "items": pa.table({"genres": [[] for _ in items["item_id"]], **items}),
        "interactions": pa.table({name: full[name] for name in INTERACTION_SCHEMA.names},
                                 schema=INTERACTION_SCHEMA),
    }
    paths = {}
    for name, table in tables.items():
        paths[name] = out_dir / f"{name}.parquet"
        pq.write_table(table, paths[name])
    return paths


def random_batch(out_dir: Path, *, seed: int, n: int, start: datetime, end: datetime,
                 n_users: int = 30, n_items: int = 20) -> dict[str, Path]:
    """A random batch whose events fall uniformly in [start, end)."""
    rng = np.random.default_rng(seed)
    user_ids = [f"u{i:03d}" for i in range(n_users)]
    item_ids = [f"i{i:03d}" for i in range(n_items)]
    span = int((end - start).total_seconds())
    seconds = np.sort(rng.integers(0, span, size=n))
    stamps = [datetime.fromtimestamp(start.timestamp() + int(s), tz=start.tzinfo) for s in seconds]
    genres = ["Action", "Comedy", "Drama"]
    return write_raw_batch(
        out_dir,
        users={"user_id": user_ids, "age": rng.integers(18, 70, size=n_users).tolist()},
        items={"item_id": item_ids, "title": [f"T{i}" for i in item_ids],
               "genres": [[genres[i % 3]] + ([genres[(i + 1) % 3]] if i % 2 else [])
                          for i in range(n_items)],
               "release_year": rng.integers(1980, 2024, size=n_items).tolist()},
        interactions={
            "user_id": rng.choice(user_ids, size=n).tolist(),
            "item_id": rng.choice(item_ids, size=n).tolist(),
            "timestamp": stamps,
            "rating": rng.integers(1, 6, size=n).astype(float).tolist(),
            "event_type": rng.choice(["view", "like", "purchase"], size=n).tolist(),
        },
    )


@pytest.fixture
def make_batch(tmp_path: Path):
    """`make_batch(name, **random_batch kwargs)` -> raw file paths under tmp_path/raw/name."""

    def factory(name: str, **kwargs) -> dict[str, Path]:
        return random_batch(tmp_path / "raw" / name, **kwargs)

    return factory


@pytest.fixture
def raw_files(tmp_path):
    users = pd.DataFrame({"user_id": ["a", "b", "c"], "age": [20, 30, 40]})
    items = pd.DataFrame({"item_id": ["x", "y"], "title": ["X", "Y"],
                          "genres": [["Drama"], ["Comedy", "Drama"]]})
    ts = pd.to_datetime(["2024-01-01", "2024-01-02", "2024-01-03", "2024-02-01", "2024-03-01"],
                        utc=True)
    inter = pd.DataFrame({
        "user_id": ["a", "a", "b", "b", "a"],
        "item_id": ["x", "x", "x", "y", "y"],
        "timestamp": ts,
        "rating": [4.0, 5.0, None, 3.0, 1.0],
        "weight": [None, None, 2.0, None, None],
        "event_type": [None, "purchase", None, None, "view"],
    })
    paths = {}
    for name, frame in (("users", users), ("items", items), ("interactions", inter)):
        paths[name] = tmp_path / f"{name}.parquet"
        frame.to_parquet(paths[name])
    return paths
