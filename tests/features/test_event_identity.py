"""Regression (issue 13): overlapping batches counted the same event once per batch.

After a few overlapping batches the raw store held one (user, item, timestamp) event 7 times,
and every snapshot counted it 7 times (training weights inflated). The rule: an event is
identified by (user_id, item_id, timestamp, event_type); when several batches carry it, the
batch ingested last wins (its rating and weight), and every view counts it once.
"""

from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pandas as pd
import pytest

from features.snapshot import build_snapshot, build_views
from features.sources import sources_from_store
from ingest.raw_store import commit_batch, events_may_repeat, list_batches

from .conftest import write_raw_batch

T0 = datetime(2024, 3, 1, tzinfo=UTC)
USERS = {"user_id": ["u1", "u2"]}
ITEMS = {"item_id": ["i1", "i2"], "title": ["One", "Two"], "genres": [["Drama"], ["Comedy"]]}


def _t(hours: int) -> datetime:
    return T0 + timedelta(hours=hours)


def _batch(tmp_path, name, events):
    """events: (user, item, hours after T0, event_type, rating)."""
    users, items, hours, kinds, ratings = zip(*events, strict=True)
    return write_raw_batch(tmp_path / name, users=USERS, items=ITEMS, interactions={
        "user_id": list(users), "item_id": list(items),
        "timestamp": [_t(h) for h in hours], "event_type": list(kinds),
        "rating": [float(r) for r in ratings]})


@pytest.fixture
def overlapping_store(tmp_path):
    root = tmp_path / "store"
    first = [("u1", "i1", 0, "view", 3), ("u1", "i2", 1, "view", 4),
             ("u2", "i1", 2, "purchase", 5)]
    second = [("u1", "i2", 1, "view", 4), ("u2", "i1", 2, "purchase", 5),
              ("u2", "i2", 3, "view", 2)]
    # The latest batch changes the rating of (u1, i1, t0, view) from 3 to 1 and adds a
    # *different* event at the same time: another event type.
    third = [("u1", "i1", 0, "view", 1), ("u2", "i2", 3, "view", 2),
             ("u1", "i1", 0, "like", 5)]
    for name, events in (("b1", first), ("b2", second), ("b3", third)):
        assert not commit_batch(_batch(tmp_path, name, events), raw_root=root).skipped
    return root


def _views(manifest):
    inter = pd.read_parquet(manifest.view_path("interactions")).set_index(["user_id", "item_id"])
    users = pd.read_parquet(manifest.view_path("user_features")).set_index("user_id")
    items = pd.read_parquet(manifest.view_path("item_features")).set_index("item_id")
    return inter, users, items


def test_each_event_counts_once_and_the_latest_batch_wins(overlapping_store, tmp_path):
    manifest = build_views(sources_from_store(overlapping_store, None),
                           features_root=tmp_path / "f", snapshot_id="all")
    inter, users, items = _views(manifest)

    assert inter["n_events"].sum() == 5  # 9 rows in the store, 5 distinct events
    assert inter["n_events"].to_dict() == {("u1", "i1"): 2, ("u1", "i2"): 1,
                                           ("u2", "i1"): 1, ("u2", "i2"): 1}
    # (u1, i1): the view's rating from the latest batch (1, not 3) and the like (5, weight x2)
    assert inter.loc[("u1", "i1"), "mean_rating"] == pytest.approx(3.0)
    assert inter.loc[("u1", "i1"), "raw_weight"] == pytest.approx(1.0 + 2 * 5.0)
    assert inter.loc[("u2", "i1"), "raw_weight"] == pytest.approx(3 * 5.0)  # once, not twice
    assert users["n_interactions"].to_dict() == {"u1": 3, "u2": 2}
    assert users.loc["u2", "n_purchases"] == 1
    assert items["n_interactions"].to_dict() == {"i1": 3, "i2": 2}


def test_as_of_builds_keep_the_rule(overlapping_store, tmp_path):
    cut = _t(1)  # events at t0 and t1 only
    manifest = build_views(sources_from_store(overlapping_store, cut),
                           features_root=tmp_path / "f", snapshot_id="cut", as_of=cut)
    inter, users, _ = _views(manifest)

    assert inter["last_ts"].max() <= cut
    assert inter["n_events"].to_dict() == {("u1", "i1"): 2, ("u1", "i2"): 1}
    assert inter.loc[("u1", "i1"), "mean_rating"] == pytest.approx(3.0)  # latest batch's 1
    assert users.loc["u1", "n_interactions"] == 3 and users.loc["u2", "n_interactions"] == 0


def test_the_order_of_ingestion_decides_not_the_order_of_files(tmp_path):
    """The winner is the batch committed last, whatever its id or its events' dates."""
    root = tmp_path / "store"
    late = _batch(tmp_path, "late", [("u1", "i1", 0, "view", 2), ("u2", "i2", 50, "view", 4)])
    early = _batch(tmp_path, "early", [("u1", "i1", 0, "view", 5)])
    commit_batch(late, raw_root=root)
    commit_batch(early, raw_root=root)  # ingested last: its rating wins
    manifest = build_views(sources_from_store(root, None), features_root=tmp_path / "f",
                           snapshot_id="s")
    inter, _, _ = _views(manifest)
    assert inter.loc[("u1", "i1"), "n_events"] == 1
    assert inter.loc[("u1", "i1"), "mean_rating"] == pytest.approx(5.0)


def test_a_repeated_row_within_one_batch_counts_once(tmp_path):
    files = _batch(tmp_path, "one", [("u1", "i1", 0, "view", 4), ("u1", "i1", 0, "view", 4),
                                     ("u2", "i1", 1, None, 3), ("u2", "i1", 1, None, 3)])
    manifest = build_snapshot(files, features_root=tmp_path / "f", snapshot_id="s")
    inter, users, _ = _views(manifest)
    assert inter["n_events"].to_dict() == {("u1", "i1"): 1, ("u2", "i1"): 1}
    assert users["n_interactions"].to_dict() == {"u1": 1, "u2": 1}


def test_grouping_is_skipped_only_when_the_markers_prove_events_distinct(tmp_path):
    """Daily batches that do not overlap cost nothing extra; a batch repeating its own event,
    or a marker that does not say (written before the rule), makes the build group."""
    root = tmp_path / "store"
    commit_batch(_batch(tmp_path, "d1", [("u1", "i1", 0, "view", 3), ("u2", "i2", 5, "view", 4)]),
                 raw_root=root)
    second = commit_batch(_batch(tmp_path, "d2", [("u1", "i2", 6, "view", 2)]), raw_root=root)
    assert second.repeated_events == 0
    assert sources_from_store(root, None).events_distinct

    # Touching ranges may share an event: the boundary second is in both.
    touching = [list_batches(root)[0], replace(second, min_event_ts=_t(5).isoformat())]
    assert events_may_repeat(touching)
    assert events_may_repeat([replace(second, repeated_events=None)])  # an old marker

    third = commit_batch(_batch(tmp_path, "d3", [("u2", "i1", 9, "view", 1),
                                                 ("u2", "i1", 9, "view", 1)]), raw_root=root)
    assert third.repeated_events == 1
    sources = sources_from_store(root, None)
    assert not sources.events_distinct
    inter, _, _ = _views(build_views(sources, features_root=tmp_path / "f", snapshot_id="s"))
    assert inter["n_events"].to_dict() == {("u1", "i1"): 1, ("u1", "i2"): 1, ("u2", "i1"): 1,
                                           ("u2", "i2"): 1}
