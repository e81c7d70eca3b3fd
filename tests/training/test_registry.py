"""save_model / load_model round trip."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from recsys.errors import ModelError
from training.data import InteractionMatrix
from training.evaluate import TrainResult
from training.model import fit_als, recommend_top_n
from training.registry import load_model, save_model


@pytest.fixture
def trained(checkerboard, small_params):
    ids = np.array([f"id-{i}" for i in range(20)], dtype=object)
    data = InteractionMatrix(user_ids=ids, item_ids=ids.copy(), matrix=checkerboard)
    model = fit_als(checkerboard, small_params)
    metrics = {"als": {"precision@10": np.float64(0.5)}, "k": 10}
    return TrainResult(model=model, params=small_params, metrics=metrics), data


def test_round_trip(tmp_path: Path, trained) -> None:
    result, data = trained
    path = save_model(result, data, models_root=tmp_path / "models", version="v1",
                      metadata={"feature_snapshot_id": "snap-1"})
    assert path == tmp_path / "models" / "v1"
    assert sorted(p.name for p in path.iterdir()) == ["ids.npz", "metadata.json", "model.npz"]
    assert [p.name for p in (tmp_path / "models").iterdir()] == ["v1"]   # no temp dirs left

    model, user_ids, item_ids, meta = load_model(path)
    np.testing.assert_array_equal(model.item_factors, result.model.item_factors)
    np.testing.assert_array_equal(model.user_factors, result.model.user_factors)
    assert user_ids.dtype == object and user_ids.tolist() == data.user_ids.tolist()
    assert item_ids.tolist() == data.item_ids.tolist()
    assert meta["feature_snapshot_id"] == "snap-1"
    assert meta["params"] == result.params.to_dict()
    assert meta["metrics"]["als"]["precision@10"] == 0.5
    assert set(meta["libraries"]) >= {"implicit", "numpy", "scipy"}
    assert meta["created_at"].endswith("+00:00")
    assert json.loads((path / "metadata.json").read_text()) == meta
    a = recommend_top_n(model, data.matrix, 3)[0]
    b = recommend_top_n(result.model, data.matrix, 3)[0]
    np.testing.assert_array_equal(a, b)


def test_refuses_overwrite_bad_version_and_reserved_keys(tmp_path: Path, trained) -> None:
    result, data = trained
    save_model(result, data, models_root=tmp_path, version="v1", metadata={})
    with pytest.raises(ModelError, match="exists"):
        save_model(result, data, models_root=tmp_path, version="v1", metadata={})
    with pytest.raises(ModelError, match="invalid"):
        save_model(result, data, models_root=tmp_path, version="../x", metadata={})
    with pytest.raises(ModelError, match="reserved"):
        save_model(result, data, models_root=tmp_path, version="v2", metadata={"params": 1})


def test_load_incomplete_dir(tmp_path: Path) -> None:
    with pytest.raises(ModelError, match="lacks"):
        load_model(tmp_path)
