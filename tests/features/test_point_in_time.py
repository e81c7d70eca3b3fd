"""As-of builds never see the future; same inputs give the same bytes; raw-store builds."""

from datetime import UTC, datetime, timedelta

import duckdb
import pandas as pd
import pytest

from features.registry import REGISTRY
from features.snapshot import build_snapshot, build_views
from features.sources import sources_from_store
from ingest.raw_store import commit_batch
from recsys.errors import FeatureStoreError

JAN = datetime(2024, 1, 1, tzinfo=UTC)
FEB = datetime(2024, 2, 1, tzinfo=UTC)
MAR = datetime(2024, 3, 1, tzinfo=UTC)


@pytest.fixture
def store(make_batch, tmp_path):
    root = tmp_path / "store"
    commit_batch(make_batch("jan", seed=1, n=400, start=JAN, end=FEB), raw_root=root)
    commit_batch(make_batch("feb", seed=2, n=400, start=FEB, end=MAR), raw_root=root)
    return root


def _events(make_batch_paths) -> pd.DataFrame:
    return pd.read_parquet(make_batch_paths["interactions"])


@pytest.mark.parametrize("cut", [JAN + timedelta(days=10, hours=5, minutes=17),
                                 FEB - timedelta(microseconds=1), FEB + timedelta(days=20)])
def test_features_as_of_t_never_contain_later_events(store, tmp_path, cut):
    all_events = duckdb.execute(
        f"SELECT * FROM read_parquet('{store}/interactions/*/*.parquet')").df()
    visible = all_events[all_events["timestamp"] <= cut]
    assert 0 < len(visible) < len(all_events)

    m = build_views(sources_from_store(store, cut), features_root=tmp_path / "f",
                    snapshot_id="s", as_of=cut)
    assert m.as_of == cut.isoformat() and m.requested_as_of == cut.isoformat()
    inter = pd.read_parquet(m.view_path("interactions"))
    users = pd.read_parquet(m.view_path("user_features")).set_index("user_id")
    items = pd.read_parquet(m.view_path("item_features")).set_index("item_id")
    for frame in (inter, users, items):
        assert frame["last_ts"].dropna().max() <= cut
    # exact agreement with a pandas recomputation on the visible events only
    assert inter["n_events"].sum() == len(visible)
    expected_users = visible.groupby("user_id").size()
    assert users.loc[expected_users.index, "n_interactions"].tolist() == expected_users.tolist()
    expected_items = visible.groupby("item_id")["user_id"].nunique()
    assert items.loc[expected_items.index, "n_users"].tolist() == expected_items.tolist()
    assert (users["days_since_last"].dropna() >= 0).all()


def test_as_of_reads_only_partitions_up_to_its_date(store):
    sources = sources_from_store(store, JAN + timedelta(days=3))
    days = {p.parent.name for p in sources.interactions}
    assert days and max(days) <= "date=2024-01-04"


def test_entities_from_batches_after_as_of_are_invisible(tmp_path, store):
    from tests.features.conftest import write_raw_batch

    late = write_raw_batch(
        tmp_path / "late", users={"user_id": ["u000", "newcomer"], "age": [99, 20]},
        items={"item_id": ["i000"], "title": ["Renamed"]},
        interactions={"user_id": ["newcomer"], "item_id": ["i000"],
                      "timestamp": [MAR + timedelta(days=5)]})
    commit_batch(late, raw_root=store)
    before = build_views(sources_from_store(store, MAR), features_root=tmp_path / "f",
                         snapshot_id="before", as_of=MAR)
    after = build_views(sources_from_store(store, None), features_root=tmp_path / "f",
                        snapshot_id="after")
    users_before = pd.read_parquet(before.view_path("user_features")).set_index("user_id")
    users_after = pd.read_parquet(after.view_path("user_features")).set_index("user_id")
    assert "newcomer" not in users_before.index and "newcomer" in users_after.index
    assert users_before.loc["u000", "age"] != 99 and users_after.loc["u000", "age"] == 99
    items_after = pd.read_parquet(after.view_path("item_features")).set_index("item_id")
    assert items_after.loc["i000", "title"] == "Renamed"  # latest batch wins
    assert len(before.batches) == 2 and len(after.batches) == 3


def test_no_batch_visible_is_a_clear_error(store, tmp_path):
    with pytest.raises(FeatureStoreError, match="no batch visible"):
        sources_from_store(store, JAN - timedelta(days=1))


def test_naive_as_of_means_utc(store):
    naive = sources_from_store(store, datetime(2024, 1, 10, 12))
    aware = sources_from_store(store, datetime(2024, 1, 10, 12, tzinfo=UTC))
    assert naive == aware


def _strip(manifest) -> dict:
    data = manifest.to_dict()
    for key in ("created_at", "build_seconds", "sources"):
        data.pop(key)
    for view in data["views"].values():
        view.pop("path")
    return data


def test_determinism_identical_files_and_manifests(store, tmp_path):
    cut = FEB + timedelta(days=9)
    a = build_views(sources_from_store(store, cut), features_root=tmp_path / "a",
                    snapshot_id="s", as_of=cut)
    b = build_views(sources_from_store(store, cut), features_root=tmp_path / "b",
                    snapshot_id="s", as_of=cut)
    for view in REGISTRY:
        assert a.view_path(view).read_bytes() == b.view_path(view).read_bytes()
    assert _strip(a) == _strip(b)
    assert a.views["interactions"].sha256 and a.batches == b.batches


def test_manifest_records_versions_sources_and_params(raw_files, tmp_path):
    m = build_snapshot(raw_files, features_root=tmp_path / "f", snapshot_id="s",
                       params={"half_life_days": 10.0})
    assert {n: v.version for n, v in m.views.items()} == {n: v.version
                                                          for n, v in REGISTRY.items()}
    assert m.params["half_life_days"] == 10.0 and m.duckdb_version == duckdb.__version__
    assert len(m.batches) == 1 and len(m.batches[0]["content_hash"]) == 64
    assert set(m.batches[0]["source_hashes"]) == {"users", "items", "interactions"}
    assert m.as_of == "2024-03-01T00:00:00+00:00"  # no cut: the latest event time
    inter = pd.read_parquet(m.view_path("interactions")).set_index(["user_id", "item_id"])
    # (a, x): events 60 and 59 days before as-of; weight < raw weight, both halvings applied
    expected = 4.0 * 0.5 ** (60 / 10) + 15.0 * 0.5 ** (59 / 10)
    assert inter.loc[("a", "x"), "weight"] == pytest.approx(expected, rel=1e-5)
    assert inter.loc[("a", "x"), "raw_weight"] == pytest.approx(19.0)
    with pytest.raises(ValueError, match="unknown feature build parameter"):
        build_snapshot(raw_files, features_root=tmp_path / "g", snapshot_id="s",
                       params={"half_life": 3})


def test_batches_of_separate_months_need_no_grouping(store):
    """The usual case, daily or monthly batches that do not overlap: the build reads the rows
    as events (no grouping), as before the event-identity rule (issue 13)."""
    assert sources_from_store(store, None).events_distinct
