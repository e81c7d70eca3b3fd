from datetime import UTC, datetime

import pandas as pd
import pytest

from features.snapshot import build_snapshot, load_manifest
from recsys.errors import InvalidId


def test_views_and_manifest(raw_files, tmp_path):
    root = tmp_path / "features"
    manifest = build_snapshot(raw_files, features_root=root, snapshot_id="s1")
    assert {v: manifest.views[v].rows for v in manifest.views} == {
        "interactions": 4, "user_features": 3, "item_features": 2}
    expected_path = root / "interactions" / "snapshot=s1" / "data.parquet"
    assert manifest.view_path("interactions") == expected_path
    inter = pd.read_parquet(manifest.view_path("interactions")).set_index(["user_id", "item_id"])
    # rating 4 (plain) + rating 5 x purchase multiplier 3 = 19; weight beats rating when present
    assert inter.loc[("a", "x"), "weight"] == pytest.approx(19.0)
    assert inter.loc[("b", "x"), "weight"] == pytest.approx(2.0)
    assert inter.loc[("a", "x"), "n_events"] == 2
    users = pd.read_parquet(manifest.view_path("user_features")).set_index("user_id")
    assert users.loc["c", "n_interactions"] == 0 and users.loc["a", "n_items"] == 2
    items = pd.read_parquet(manifest.view_path("item_features")).set_index("item_id")
    assert items.loc["x", "n_users"] == 2 and items.loc["x", "popularity_rank"] == 1
    assert load_manifest(root, "s1") == manifest
    assert set(manifest.sources) == {"users", "items", "interactions"}
    with pytest.raises(FileExistsError):
        build_snapshot(raw_files, features_root=root, snapshot_id="s1")


def test_as_of_excludes_later_events(raw_files, tmp_path):
    as_of = datetime(2024, 1, 15, tzinfo=UTC)
    manifest = build_snapshot(raw_files, features_root=tmp_path / "f", snapshot_id="s",
                              as_of=as_of)
    inter = pd.read_parquet(manifest.view_path("interactions"))
    assert inter["last_ts"].max() <= as_of
    assert set(zip(inter.user_id, inter.item_id, strict=True)) == {("a", "x"), ("b", "x")}


def test_same_inputs_give_identical_files(raw_files, tmp_path):
    a = build_snapshot(raw_files, features_root=tmp_path / "a", snapshot_id="s")
    b = build_snapshot(raw_files, features_root=tmp_path / "b", snapshot_id="s")
    for view in a.views:
        assert a.view_path(view).read_bytes() == b.view_path(view).read_bytes()


def test_a_snapshot_id_that_is_no_id_writes_nothing(raw_files, tmp_path):
    """Regression: `features build --snapshot-id "../../escaped snap"` escaped the features
    folder and left a stray temporary directory behind."""
    root = tmp_path / "features"
    with pytest.raises(InvalidId, match="snapshot id"):
        build_snapshot(raw_files, features_root=root, snapshot_id="../../escaped snap")
    assert not any(tmp_path.rglob("*escaped*"))
