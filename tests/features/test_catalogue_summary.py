"""`features.online.catalogue_summary`: the catalogue totals stored with a materialized snapshot
(what `/stats/overview` and `/stats/categories` read), on a built snapshot with known counts."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

from features.online import catalogue_summary
from features.snapshot import build_snapshot
from tests.features.conftest import write_raw_batch

T0 = datetime(2024, 1, 1, tzinfo=UTC)


def test_catalogue_summary_counts_items_and_events_per_genre(tmp_path: Path) -> None:
    # x: Drama+Comedy, 3 events; y: Drama, 1 event; z: no genre, 2 events; w: Horror, none
    events = ["x", "x", "x", "y", "z", "z"]
    files = write_raw_batch(
        tmp_path / "raw", users={"user_id": ["a"]},
        items={"item_id": ["w", "x", "y", "z"],
               "genres": [["Horror"], ["Drama", "Comedy"], ["Drama"], []]},
        interactions={"user_id": ["a"] * len(events), "item_id": events,
                      "timestamp": [T0 + timedelta(hours=h) for h in range(len(events))]})
    manifest = build_snapshot(files, features_root=tmp_path / "f", snapshot_id="s1")
    assert catalogue_summary(manifest) == {
        "items": 4, "interactions": 6,
        "genres": [{"genre": "Drama", "items": 2, "interactions": 4},
                   {"genre": "Comedy", "items": 1, "interactions": 3},
                   {"genre": "Horror", "items": 1, "interactions": 0}]}
