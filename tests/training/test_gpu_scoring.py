"""The torch scoring path (training/gpu_scoring.py) against the CPU one, on device "cpu".

Tests that need torch skip without it (it is the optional `gpu` extra); the missing-torch error
is tested without torch.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import scipy.sparse as sp

from recsys.errors import ModelError
from recsys.settings import Settings
from training import gpu_scoring
from training.data import to_csr
from training.model import PAD_ITEM, PAD_SCORE, AlsParams, fit_als, recommend_top_n
from training.scores import load_scores

SCORE_TOLERANCE = 1e-5


@pytest.fixture
def torch() -> Any:
    return pytest.importorskip("torch")


@pytest.fixture(scope="module")
def random_matrix() -> sp.csr_matrix:
    """300 users x 120 items, about 10 % filled, positive weights: continuous scores, no ties."""
    rng = np.random.default_rng(5)
    dense = (rng.random((300, 120)) < 0.1) * rng.integers(1, 6, size=(300, 120))
    return to_csr(sp.csr_matrix(dense.astype(np.float32)))


@pytest.fixture(scope="module")
def random_model(random_matrix):
    return fit_als(random_matrix, AlsParams(factors=8, regularization=0.5, alpha=2.0,
                                            iterations=5, seed=11))


def assert_same_top_n(items: np.ndarray, scores: np.ndarray, expected_items: np.ndarray,
                      expected_scores: np.ndarray) -> None:
    """Same scores rank by rank; same item set per user except items tied at the cut-off."""
    assert items.shape == expected_items.shape and items.dtype == np.int32
    assert scores.dtype == np.float32
    np.testing.assert_allclose(scores, expected_scores, atol=SCORE_TOLERANCE, rtol=0)
    np.testing.assert_array_equal(items == PAD_ITEM, expected_items == PAD_ITEM)
    for row in range(len(items)):
        differ = set(items[row].tolist()) ^ set(expected_items[row].tolist())
        cutoff = expected_scores[row, expected_items[row] != PAD_ITEM].min(initial=np.inf)
        tied = np.abs(scores[row] - cutoff) <= SCORE_TOLERANCE
        assert differ <= set(items[row, tied].tolist()) | set(
            expected_items[row, np.abs(expected_scores[row] - cutoff) <= SCORE_TOLERANCE]
            .tolist()), f"user {row}: {sorted(differ)}"


@pytest.mark.parametrize("batch_size", [7, 4096])
def test_torch_matches_recommend_top_n(torch, random_matrix, random_model, batch_size) -> None:
    expected = recommend_top_n(random_model, random_matrix, 10)
    items, scores = gpu_scoring.recommend_top_n_torch(random_model, random_matrix, 10,
                                                      device="cpu", batch_size=batch_size)
    assert_same_top_n(items, scores, *expected)
    assert random_matrix[np.arange(300)[:, None], items].nnz == 0   # nothing already seen
    assert np.all(np.diff(scores, axis=1) <= 0)                    # best first


def test_torch_matches_for_a_subset_of_users(torch, random_matrix, random_model) -> None:
    users = np.array([299, 0, 17, 17, 150], dtype=np.int32)
    expected = recommend_top_n(random_model, random_matrix, 6, users=users)
    got = gpu_scoring.recommend_top_n_torch(random_model, random_matrix, 6, device="cpu",
                                            batch_size=2, users=users)
    assert_same_top_n(*got, *expected)
    with pytest.raises(ModelError, match="row indices"):
        gpu_scoring.recommend_top_n_torch(random_model, random_matrix, 6, device="cpu",
                                          users=np.array([300]))


def test_torch_pads_like_the_cpu_path(torch, random_model) -> None:
    n_users, n_items = random_model.user_factors.shape[0], random_model.item_factors.shape[0]
    rows = np.zeros((n_users, n_items), dtype=np.float32)
    rows[0, :] = 1            # user 0 has seen every item: nothing to recommend
    rows[1, 2:] = 1           # user 1 has two items left
    rows[2, : n_items - 4] = 1  # user 2 has four left
    seen = to_csr(sp.csr_matrix(rows))
    expected = recommend_top_n(random_model, seen, 5)
    items, scores = gpu_scoring.recommend_top_n_torch(random_model, seen, 5, device="cpu",
                                                      batch_size=2)
    assert_same_top_n(items, scores, *expected)
    np.testing.assert_array_equal(items[0], [PAD_ITEM] * 5)
    np.testing.assert_array_equal(scores[0], [PAD_SCORE] * 5)
    assert sorted(items[1, :2].tolist()) == [0, 1]
    np.testing.assert_array_equal(items[1, 2:], [PAD_ITEM] * 3)
    np.testing.assert_array_equal(scores[1, 2:], [PAD_SCORE] * 3)
    assert set(items[2, :4].tolist()) == set(range(n_items - 4, n_items))
    assert items[2, 4] == PAD_ITEM and np.all(items[3:] >= 0)


def test_torch_pads_when_n_exceeds_the_catalogue(torch) -> None:
    rng = np.random.default_rng(0)
    user_factors = rng.standard_normal((4, 3)).astype(np.float32)
    item_factors = rng.standard_normal((3, 3)).astype(np.float32)
    seen = to_csr(sp.csr_matrix(np.array([[1, 0, 0], [0, 0, 0], [1, 1, 1], [0, 1, 0]],
                                         dtype=np.float32)))
    items, scores = gpu_scoring.top_n_from_factors(user_factors, item_factors, seen, 5,
                                                   device="cpu")
    full = user_factors @ item_factors.T
    full[seen.toarray() > 0] = -np.inf
    order = np.argsort(-full, axis=1, kind="stable")
    for user, n_left in enumerate([2, 3, 0, 2]):
        np.testing.assert_array_equal(items[user, :n_left], order[user, :n_left])
        np.testing.assert_allclose(scores[user, :n_left], full[user, order[user, :n_left]],
                                   atol=SCORE_TOLERANCE)
        assert np.all(items[user, n_left:] == PAD_ITEM)
        assert np.all(scores[user, n_left:] == PAD_SCORE)


def test_torch_rejects_bad_input(torch, random_matrix, random_model) -> None:
    with pytest.raises(ModelError, match="n and batch_size"):
        gpu_scoring.recommend_top_n_torch(random_model, random_matrix, 0, device="cpu")
    with pytest.raises(ModelError, match="users x items matrix"):
        gpu_scoring.recommend_top_n_torch(random_model, random_matrix[:10], 5, device="cpu")
    with pytest.raises(ModelError, match="factor shapes"):
        gpu_scoring.top_n_from_factors(np.zeros((300, 4), np.float32),
                                       np.zeros((120, 5), np.float32), random_matrix, 5,
                                       device="cpu")


def test_cuda_asked_for_without_cuda_is_an_error(torch, monkeypatch, random_matrix,
                                                 random_model) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(ModelError, match="CUDA is not available"):
        gpu_scoring.recommend_top_n_torch(random_model, random_matrix, 5, device="cuda")
    assert gpu_scoring.resolve_device(None).type == "cpu"


def test_missing_torch_names_the_extra(monkeypatch, random_matrix, random_model) -> None:
    monkeypatch.setitem(sys.modules, "torch", None)  # makes `import torch` raise ImportError
    with pytest.raises(ModelError, match=r"recsys-batch\[gpu\]"):
        gpu_scoring.recommend_top_n_torch(random_model, random_matrix, 5, device="cpu")


def test_score_backend_setting(monkeypatch) -> None:
    assert Settings().score_backend == "cpu"
    monkeypatch.setenv("RECSYS_SCORE_BACKEND", "gpu")
    assert Settings().score_backend == "gpu"
    monkeypatch.setenv("RECSYS_SCORE_BACKEND", "tpu")
    with pytest.raises(ValueError, match="score_backend"):
        Settings()


def _trained(tmp_path: Path) -> tuple[Path, Any]:
    from tests.training.test_stage_gate import write_snapshot
    from training.stage import train_run_model

    manifest = write_snapshot(tmp_path, "s1")
    settings = Settings(data_dir=tmp_path, top_n=5, similar_n=3, popular_n=5, eval_k=3,
                        explain_n=0, factors=2, regularization=0.1, alpha=5.0, iterations=10)
    model_dir, _ = train_run_model(manifest, version="v1", settings=settings)
    return model_dir, manifest


def test_score_stage_gpu_backend_fails_without_cuda(torch, monkeypatch, tmp_path: Path) -> None:
    from training.stage import score_run_model

    model_dir, manifest = _trained(tmp_path)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    settings = Settings(data_dir=tmp_path, top_n=5, explain_n=0, score_backend="gpu")
    with pytest.raises(ModelError, match="RECSYS_SCORE_BACKEND=cpu"):
        score_run_model(model_dir, manifest, settings=settings)


def test_score_stage_gpu_backend_uses_torch_on_cuda(torch, monkeypatch, tmp_path: Path) -> None:
    from training.stage import score_run_model

    model_dir, manifest = _trained(tmp_path)
    score_run_model(model_dir, manifest, settings=Settings(data_dir=tmp_path, top_n=5,
                                                           explain_n=0))
    cpu_scores = load_scores(model_dir)
    expected = cpu_scores["rec_items"], cpu_scores["rec_scores"]
    devices: list[str | None] = []
    real = gpu_scoring.recommend_top_n_torch

    def on_cpu_instead(*args: Any, device: str | None = None, **kwargs: Any) -> Any:
        devices.append(device)  # the stage asks for CUDA; this machine may have none
        return real(*args, device="cpu", **kwargs)

    monkeypatch.setattr(gpu_scoring, "recommend_top_n_torch", on_cpu_instead)
    score_run_model(model_dir, manifest, settings=Settings(
        data_dir=tmp_path, top_n=5, explain_n=0, score_backend="gpu", partitions=2))
    assert devices == ["cuda", "cuda"]  # once per user partition
    gpu_scores = load_scores(model_dir)
    assert_same_top_n(gpu_scores["rec_items"], gpu_scores["rec_scores"], *expected)
