"""Retention keeps the newest K snapshots and every protected one.

Which snapshots are protected (those of saved models, of published versions, of online
materializations) is composed by the caller: see tests/flows/test_housekeeping.py.
"""

import pytest

from features.retention import prune_snapshots
from features.snapshot import build_snapshot, list_manifests


def test_prune_keeps_newest_and_protected(raw_files, tmp_path):
    features = tmp_path / "features"
    for i in range(6):
        build_snapshot(raw_files, features_root=features, snapshot_id=f"s{i}")

    assert prune_snapshots(features, keep=2, protect={"s0", "s1"}, dry_run=True) == ["s2", "s3"]
    assert len(list_manifests(features)) == 6
    assert prune_snapshots(features, keep=2, protect={"s0", "s1"}) == ["s2", "s3"]
    left = {m.snapshot_id for m in list_manifests(features)}
    assert left == {"s0", "s1", "s4", "s5"}
    assert not (features / "interactions" / "snapshot=s2").exists()
    assert (features / "interactions" / "snapshot=s0" / "data.parquet").exists()
    assert prune_snapshots(features, keep=1, protect=set()) == ["s0", "s1", "s4"]
    with pytest.raises(ValueError, match="keep must be >= 1"):
        prune_snapshots(features, keep=0, protect=set())

