"""The publish payload from the model registry, and item attributes from a feature snapshot's
`item_features` view."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from features.snapshot import Manifest, ViewSnapshot, manifest_path
from recsys.errors import NotFound, PublishError
from recsys.settings import Settings
from serving.artifacts import item_attributes, payload_for_version, with_item_attributes
from tests.serving.payloads import N_ITEMS, make_payload


def _snapshot(features_dir: Path, snapshot_id: str, ids: list[str],
              genres: list[list[str]]) -> None:
    view = features_dir / "item_features" / f"snapshot={snapshot_id}" / "data.parquet"
    view.parent.mkdir(parents=True)
    pq.write_table(pa.table({"item_id": ids, "title": [f"T {i}" for i in ids],
                             "genres": genres}), view)
    manifest = Manifest(
        snapshot_id=snapshot_id, created_at="2024-01-01T00:00:00+00:00", as_of=None,
        duckdb_version="x", sources={},
        views={"item_features": ViewSnapshot(name="item_features", path=str(view),
                                             rows=len(ids), schema=[])},
    )
    path = manifest_path(features_dir, snapshot_id)
    path.parent.mkdir(parents=True)
    path.write_text(json.dumps(manifest.to_dict()))


def test_item_attributes_are_aligned_to_model_items(tmp_path: Path) -> None:
    # the snapshot lists items in another order and lacks one the model has
    _snapshot(tmp_path, "s1", ["b", "a"], [["Drama"], ["Comedy", "Horror"]])
    got = item_attributes(tmp_path, "s1", np.array(["a", "b", "c"]))
    assert got == {"genres": [["Comedy", "Horror"], ["Drama"], None]}
    assert item_attributes(tmp_path, "s1", np.array(["a"]), columns=("nope",)) == {}


def test_with_item_attributes_fills_payload(tmp_path: Path) -> None:
    ids = [f"i{k}" for k in range(N_ITEMS)]
    _snapshot(tmp_path / "features", "s1", ids, [["G"]] * N_ITEMS)
    settings = Settings(data_dir=tmp_path)
    payload = make_payload("v1")
    bare = with_item_attributes(payload, settings)
    assert bare is payload  # no snapshot named in the metadata
    named = make_payload("v1")
    named.metadata["feature_snapshot"] = "s1"
    filled = with_item_attributes(named, settings)
    assert filled.item_attributes == {"genres": [["G"]] * N_ITEMS}


def test_missing_snapshot_names_it(tmp_path: Path) -> None:
    with pytest.raises(PublishError, match="feature snapshot 'gone'"):
        item_attributes(tmp_path, "gone", np.array(["a"]))


def test_unknown_version_is_not_found(tmp_path: Path) -> None:
    with pytest.raises(NotFound, match="'v9' is neither in MongoDB nor in"):
        payload_for_version(Settings(data_dir=tmp_path), "v9")
