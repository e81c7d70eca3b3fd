"""`user_features.recent_items`: the user's 20 latest distinct items by last event, newest first,
as the explorer shows them (a known-answer test on a built snapshot)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pandas as pd

from features.registry import USER_FEATURES
from features.snapshot import build_snapshot
from tests.features.conftest import write_raw_batch

T0 = datetime(2024, 1, 1, tzinfo=UTC)


def test_recent_items_are_the_latest_distinct_items(tmp_path: Path) -> None:
    # "a": 25 items, item k at hour k, then item 3 again at hour 30 (its last event now)
    # "b": two items at the same time (tie: by item id); "c": no events
    rows = [("a", f"x{k:02d}", T0 + timedelta(hours=k)) for k in range(25)]
    rows += [("a", "x03", T0 + timedelta(hours=30)),
             ("b", "y2", T0), ("b", "y1", T0), ("b", "y1", T0 - timedelta(days=1))]
    files = write_raw_batch(
        tmp_path / "raw",
        users={"user_id": ["a", "b", "c"]},
        items={"item_id": (ids := sorted({i for _, i, _ in rows})),
               "genres": [["Drama"] for _ in ids]},
        interactions={"user_id": [u for u, _, _ in rows], "item_id": [i for _, i, _ in rows],
                      "timestamp": [t for _, _, t in rows]})
    manifest = build_snapshot(files, features_root=tmp_path / "f", snapshot_id="s1")
    users = pd.read_parquet(manifest.view_path("user_features")).set_index("user_id")

    recent_a = list(users.loc["a", "recent_items"])
    assert [r["item_id"] for r in recent_a] == ["x03"] + [f"x{k:02d}" for k in range(24, 5, -1)]
    assert recent_a[0]["last_ts"] == T0 + timedelta(hours=30)
    assert [r["item_id"] for r in users.loc["b", "recent_items"]] == ["y1", "y2"]
    assert list(users.loc["c", "recent_items"]) == []
    assert USER_FEATURES.column("recent_items").dtype.startswith("STRUCT(item_id VARCHAR")
