"""The model registry: save/load round trip, atomic writes, verify, list, prune, references."""

from __future__ import annotations

import errno
import json
import os
import time
from pathlib import Path

import numpy as np
import pytest

from recsys.errors import InvalidId, ModelError
from training import registry, scores
from training.data import InteractionMatrix
from training.evaluate import TrainResult
from training.model import fit_als, recommend_top_n
from training.registry import (
    list_models,
    load_model,
    load_training_matrix,
    model_info,
    prune_models,
    referenced_snapshots,
    save_model,
    verify_model,
)
from training.scores import (
    ITEMS_PART,
    commit_scores,
    load_item_scores,
    load_score_part,
    load_scores,
    score_partitions,
    start_scores,
    user_part_name,
    write_score_part,
)


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
    assert sorted(p.name for p in path.iterdir()) == ["ids.npz", "matrix.npz", "metadata.json",
                                                      "model.npz"]
    assert [p.name for p in (tmp_path / "models").iterdir()] == ["v1"]   # no temp dirs left
    matrix = load_training_matrix(path)
    assert (matrix != data.matrix).nnz == 0 and matrix.dtype == np.float32

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
    with pytest.raises(InvalidId, match="invalid model version id '../x'"):
        save_model(result, data, models_root=tmp_path, version="../x", metadata={})
    with pytest.raises(ModelError, match="reserved"):
        save_model(result, data, models_root=tmp_path, version="v2", metadata={"params": 1})


def test_load_incomplete_dir(tmp_path: Path) -> None:
    with pytest.raises(ModelError, match="lacks"):
        load_model(tmp_path)


def _save_scores(path: Path, *, n_users: int = 20, n_items: int = 20, parts: int = 1,
                 user_index: list[np.ndarray] | None = None) -> Path:
    """Score a saved version with placeholder arrays, user i's rec_items row all i."""
    index = user_index or [np.flatnonzero(np.arange(n_users) % parts == p) for p in range(parts)]
    start_scores(path)
    checksums = {ITEMS_PART: write_score_part(path, ITEMS_PART, {
        "similar_items": np.zeros((n_items, 2), np.int32),
        "similar_scores": np.zeros((n_items, 2), np.float32),
        "popular_items": np.arange(4, dtype=np.int32),
        "popular_scores": np.ones(4, np.float32)})}
    for part, users in enumerate(index):
        name = user_part_name(part, parts)
        checksums[name] = write_score_part(path, name, {
            "user_index": users.astype(np.int64),
            "rec_items": np.repeat(users[:, None], 3, axis=1).astype(np.int32),
            "rec_scores": np.zeros((len(users), 3), np.float32)})
    return commit_scores(path, parts, checksums, explained=False)


def _disk_full_after(n_bytes: int):
    """An np.savez that writes `n_bytes` of its output, then fails like a full disk."""
    real_savez = np.savez

    def savez(file, *args, **kwargs):
        import io

        buffer = io.BytesIO()
        real_savez(buffer, *args, **kwargs)
        data = buffer.getvalue()[:n_bytes]
        if hasattr(file, "write"):
            file.write(data)
        else:
            Path(file).write_bytes(data)
        raise OSError(errno.ENOSPC, "No space left on device")

    return savez


def test_checksums_recorded_and_verified(tmp_path: Path, trained) -> None:
    result, data = trained
    path = save_model(result, data, models_root=tmp_path, version="v1",
                      metadata={"feature_snapshot": "s1"}, extra_files={"log.md": "# log\n"})
    meta = verify_model(path)
    assert set(meta["checksums"]) == {"model.npz", "ids.npz", "matrix.npz", "log.md"}
    assert _save_scores(path, parts=3) == path / "scores"
    meta = verify_model(path, scores=True)
    parts = [user_part_name(p, 3) for p in range(3)]
    assert set(meta["files"]) >= {ITEMS_PART, *parts} and set(meta["checksums"]) >= set(parts)
    assert meta["scores"] == {"partitions": 3, "explained": False}
    assert score_partitions(path) == 3
    assert load_score_part(path, 1)["user_index"].tolist() == list(range(1, 20, 3))
    whole = load_scores(path)
    assert whole["rec_items"].shape == (20, 3)
    np.testing.assert_array_equal(whole["rec_items"][:, 0], np.arange(20))  # back in user order
    assert load_item_scores(path)["similar_items"].shape == (20, 2)
    assert not [p for p in path.rglob(".*")]   # no temporary files
    # parts that miss a user (or repeat one) are refused by verify and load
    _save_scores(path, parts=2, user_index=[np.arange(0, 10), np.arange(9, 19)])
    with pytest.raises(ModelError, match="user parts cover 19 of 20 users, 1 more than once"):
        verify_model(path, scores=True)
    with pytest.raises(ModelError, match="do not cover each user once"):
        load_scores(path)
    # rescoring with fewer parts leaves no part of the earlier layout behind
    _save_scores(path, parts=1)
    assert sorted(p.name for p in (path / "scores").iterdir()) == [
        "items.npz", "users-00000-of-00001.npz"]
    assert score_partitions(path) == 1 and verify_model(path, scores=True)


def test_a_rewritten_part_is_the_same_file(tmp_path: Path, trained) -> None:
    """A part retried after its worker died rewrites identical bytes (same sha256)."""
    result, data = trained
    path = save_model(result, data, models_root=tmp_path, version="v1", metadata={})
    start_scores(path)
    arrays = {"user_index": np.arange(5, dtype=np.int64), "rec_items": np.ones((5, 2), np.int32),
              "rec_scores": np.ones((5, 2), np.float32)}
    name = user_part_name(0, 1)
    first = write_score_part(path, name, arrays)
    content = (path / name).read_bytes()
    time.sleep(1.1)  # np.savez would stamp another time into the zip
    assert write_score_part(path, name, arrays) == first
    assert (path / name).read_bytes() == content
    # a part is not scores until committed, and a commit needs every part
    with pytest.raises(ModelError, match="items.npz was not written"):
        commit_scores(path, 1, {name: first}, explained=False)
    with pytest.raises(ModelError, match="never scored"):
        load_scores(path)


def test_legacy_single_scores_file_reads_as_one_partition(tmp_path: Path, trained) -> None:
    result, data = trained
    path = save_model(result, data, models_root=tmp_path, version="v1", metadata={})
    np.savez(path / "scores.npz", rec_items=np.zeros((20, 3), np.int32),
             rec_scores=np.zeros((20, 3), np.float32),
             similar_items=np.zeros((20, 2), np.int32),
             similar_scores=np.zeros((20, 2), np.float32),
             popular_items=np.arange(4, dtype=np.int32), popular_scores=np.ones(4, np.float32))
    assert score_partitions(path) == 1
    assert load_score_part(path, 0)["user_index"].tolist() == list(range(20))
    assert load_scores(path)["rec_items"].shape == (20, 3)
    verify_model(path, scores=True)


def test_failed_save_leaves_no_version(tmp_path: Path, trained, monkeypatch) -> None:
    """Disk full while writing model.npz: no version appears, nothing half-written is listed."""
    result, data = trained
    monkeypatch.setattr(np, "savez", _disk_full_after(100))
    with pytest.raises(ModelError, match="'v1': writing to .* failed .*nothing was saved"):
        save_model(result, data, models_root=tmp_path, version="v1", metadata={})
    monkeypatch.undo()
    assert list(tmp_path.iterdir()) == []             # the partial directory is gone too
    assert list_models(tmp_path) == []
    assert "no model version 'v1'" in model_info(tmp_path, "v1").problem
    # the same version can be saved once the disk has room again
    save_model(result, data, models_root=tmp_path, version="v1", metadata={})
    assert [info.version for info in list_models(tmp_path) if info.ok] == ["v1"]


def test_failed_scoring_leaves_the_version_unscored(tmp_path: Path, trained,
                                                   monkeypatch) -> None:
    """Disk full while writing a score part: no truncated part to promote, nothing recorded."""
    result, data = trained
    path = save_model(result, data, models_root=tmp_path, version="v1", metadata={})
    before = json.loads((path / "metadata.json").read_text())

    def disk_full(target: Path, arrays: dict) -> str:
        Path(target).write_bytes(b"PK\x03\x04 half a part")
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(scores, "write_npz", disk_full)
    with pytest.raises(ModelError, match=r"'v1': writing scores/items.npz failed .*stays "
                                         r"unscored"):
        _save_scores(path)
    monkeypatch.undo()
    assert list((path / "scores").iterdir()) == []      # the temporary file is gone
    assert json.loads((path / "metadata.json").read_text()) == before
    with pytest.raises(ModelError, match="'v1': scores is missing: the version was never "
                                         "scored"):
        load_scores(path)
    with pytest.raises(ModelError, match="never scored"):
        verify_model(path, scores=True)
    verify_model(path)   # the model itself is intact


def test_truncated_files_are_clear_model_errors(tmp_path: Path, trained) -> None:
    """A file cut short (as a non-atomic writer on a full disk left it) is reported, not a
    BadZipFile traceback."""
    result, data = trained
    path = save_model(result, data, models_root=tmp_path, version="v1", metadata={})
    _save_scores(path)
    part = path / user_part_name(0, 1)
    part.write_bytes(part.read_bytes()[:300])
    with pytest.raises(ModelError, match=r"'v1': scores/users-00000-of-00001.npz does not match "
                                         r"its recorded sha256"):
        verify_model(path)
    with pytest.raises(ModelError, match=r"'v1': scores/users-00000-of-00001.npz is unreadable, "
                                         r"truncated or damaged"):
        load_scores(path)
    # without a recorded checksum (a version saved before checksums) the zip check catches it
    meta = json.loads((path / "metadata.json").read_text())
    del meta["checksums"]
    (path / "metadata.json").write_text(json.dumps(meta))
    with pytest.raises(ModelError, match=r"'v1': scores/users-00000-of-00001.npz is not a "
                                         r"readable npz archive"):
        verify_model(path)
    model = path / "model.npz"
    model.write_bytes(model.read_bytes()[:100])
    with pytest.raises(ModelError, match=r"'v1': model.npz is unreadable, truncated or damaged"):
        load_model(path)


def test_list_reports_broken_versions(tmp_path: Path, trained) -> None:
    result, data = trained
    save_model(result, data, models_root=tmp_path, version="good", metadata={
        "feature_snapshot": "s1"})
    (tmp_path / ".v9.abc.partial").mkdir()              # a write in progress: never listed
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "metadata.json").write_text("{not json")
    (tmp_path / "empty").mkdir()
    infos = list_models(tmp_path)
    assert [i.version for i in infos] == ["good", "empty", "broken"]
    assert infos[0].ok and infos[0].feature_snapshot == "s1"
    assert "'broken': metadata.json is unreadable" in infos[2].problem
    assert "'empty': metadata.json is missing" in infos[1].problem
    # an unreadable metadata.json means unknown references: refuse rather than guess
    with pytest.raises(ModelError, match="'broken'.*cannot tell which feature snapshot"):
        referenced_snapshots(tmp_path)
    (tmp_path / "broken" / "metadata.json").unlink()
    assert referenced_snapshots(tmp_path) == {"s1"}


def _fake_version(root: Path, version: str, created: str, snapshot: str) -> None:
    """A complete-looking version directory without fitting a model (for retention tests)."""
    (root / version).mkdir(parents=True)
    for name in ("model.npz", "ids.npz"):
        (root / version / name).write_bytes(b"x")
    (root / version / "metadata.json").write_text(json.dumps(
        {"version": version, "created_at": created, "feature_snapshot": snapshot}))


def test_prune_keeps_newest_and_protected(tmp_path: Path) -> None:
    for day in range(1, 5):
        _fake_version(tmp_path, f"m{day}", f"2024-01-0{day}T00:00:00+00:00", f"s{day}")
    (tmp_path / ".m9.x.partial").mkdir()      # a model being written is never touched
    (tmp_path / "broken").mkdir()             # a broken version is reported, never deleted
    stale = tmp_path / ".m8.y.partial"        # what a crash left two days ago
    stale.mkdir()
    leftover = tmp_path / "m4" / ".scores.npz.1234.tmp"
    leftover.write_bytes(b"x")
    (tmp_path / "m4" / "scores").mkdir()
    part_leftover = tmp_path / "m4" / "scores" / ".items.npz.1234.tmp"
    part_leftover.write_bytes(b"x")
    two_days_ago = time.time() - 2 * 86400
    for path in (stale, leftover, part_leftover):
        os.utime(path, (two_days_ago, two_days_ago))

    assert prune_models(tmp_path, keep=1, protect={"m2"}) == ["m1", "m3"]
    assert sorted(p.name for p in tmp_path.iterdir()) == [".m9.x.partial", "broken", "m2", "m4"]
    assert not leftover.exists() and not part_leftover.exists()
    assert referenced_snapshots(tmp_path) == {"s2", "s4"}
    assert prune_models(tmp_path, keep=2) == []
    assert prune_models(tmp_path / "nothing", keep=1) == []
    with pytest.raises(ValueError):
        prune_models(tmp_path, keep=0)


def test_version_ids_follow_the_id_rule(tmp_path: Path) -> None:
    for bad in ("", "../x", ".hidden", "a/b", "x" * 101):
        with pytest.raises(InvalidId, match="invalid model version id"):
            registry.model_path(tmp_path, bad)
    assert registry.model_path(tmp_path, "run-2024.01_01=a") == tmp_path / "run-2024.01_01=a"
