"""Where ALS fits (`als_device`): CPU by default, implicit's CUDA model on request, never a silent
fall-back. The GPU branch runs here against a stand-in for implicit's GPU class (no GPU on CI)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar

import implicit.gpu.als
import numpy as np
import pydantic
import pytest
import scipy.sparse as sp
from implicit.cpu.als import AlternatingLeastSquares

from recsys.errors import ModelError
from recsys.settings import Settings
from tests.training.helpers import bigger_checkerboard, write_snapshot
from training.data import InteractionMatrix
from training.evaluate import train_and_evaluate
from training.model import (
    AlsParams,
    apply_weighting,
    fit_als,
    recommend_top_n,
    resolve_als_device,
)
from training.search import SearchSpace, search_and_evaluate
from training.stage import train_run_model


class FakeGpuAls:
    """Stands in for `implicit.gpu.als.AlternatingLeastSquares`: records how it was built and what
    it was fitted on, and fits a real CPU model with the same arguments for `to_cpu`."""

    built: ClassVar[list[FakeGpuAls]] = []

    def __init__(self, **kwargs: Any) -> None:
        self.kwargs = kwargs
        self.fitted_on: sp.csr_matrix | None = None
        self.cpu_model: AlternatingLeastSquares | None = None
        self.user_factors: Any = None  # set before `fit` for a warm start, as implicit's
        self.item_factors: Any = None
        self.warm_started = False
        FakeGpuAls.built.append(self)

    def fit(self, user_items: sp.csr_matrix, show_progress: bool = True,
            callback: Any = None) -> None:  # implicit's GPU fit takes the same callback
        self.fitted_on = user_items
        self.cpu_model = AlternatingLeastSquares(**self.kwargs)
        if self.user_factors is not None:
            self.warm_started = True
            self.cpu_model.user_factors = np.array(self.user_factors.array, np.float32)
            self.cpu_model.item_factors = np.array(self.item_factors.array, np.float32)
        self.cpu_model.fit(user_items, show_progress=show_progress, callback=callback)

    def to_cpu(self) -> AlternatingLeastSquares:
        return self.cpu_model


class FakeGpuMatrix:
    """Stands in for `implicit.gpu.Matrix` (a device copy of a host array)."""

    def __init__(self, array: np.ndarray) -> None:
        self.array = array


@pytest.fixture
def no_cuda(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(implicit.gpu, "HAS_CUDA", False)


@pytest.fixture
def fake_gpu(monkeypatch: pytest.MonkeyPatch) -> type[FakeGpuAls]:
    monkeypatch.setattr(implicit.gpu, "HAS_CUDA", True)
    monkeypatch.setattr(implicit.gpu.als, "AlternatingLeastSquares", FakeGpuAls)
    monkeypatch.setattr(implicit.gpu, "Matrix", FakeGpuMatrix, raising=False)
    monkeypatch.setattr(FakeGpuAls, "built", [])
    return FakeGpuAls


@pytest.fixture
def weighted_params() -> AlsParams:
    # log1p and alpha != 1 so that both the weighting and the alpha scaling show in the matrix
    return AlsParams(factors=2, regularization=0.1, alpha=5.0, iterations=10, seed=7,
                     weighting="log1p")


def _interactions(matrix: sp.csr_matrix) -> InteractionMatrix:
    ids = np.array([f"u{i:02d}" for i in range(matrix.shape[0])], dtype=object)
    items = np.array([f"i{i:02d}" for i in range(matrix.shape[1])], dtype=object)
    return InteractionMatrix(user_ids=ids, item_ids=items, matrix=matrix)


def test_gpu_without_cuda_fails_and_says_what_to_do(no_cuda, checkerboard,
                                                    small_params) -> None:
    with pytest.raises(ModelError) as raised:
        fit_als(checkerboard, small_params, device="gpu")
    message = str(raised.value)
    assert "no working CUDA extension" in message
    assert "docs/scaling.md" in message and "RECSYS_ALS_DEVICE=cpu" in message


def test_gpu_fails_on_this_cpu_only_implicit(checkerboard, small_params) -> None:
    if implicit.gpu.HAS_CUDA:
        pytest.skip("this implicit has a working CUDA extension")
    assert resolve_als_device("auto") == "cpu"
    with pytest.raises(ModelError, match="CUDA"):
        fit_als(checkerboard, small_params, device="gpu")


def test_auto_follows_has_cuda(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(implicit.gpu, "HAS_CUDA", False)
    assert resolve_als_device("auto") == "cpu"
    monkeypatch.setattr(implicit.gpu, "HAS_CUDA", True)
    assert resolve_als_device("auto") == "gpu"
    assert resolve_als_device("cpu") == "cpu" and resolve_als_device("gpu") == "gpu"


def test_auto_without_cuda_fits_the_same_model_as_cpu(no_cuda, checkerboard,
                                                      small_params) -> None:
    on_cpu = fit_als(checkerboard, small_params, device="cpu")
    on_auto = fit_als(checkerboard, small_params, device="auto")
    assert isinstance(on_auto, AlternatingLeastSquares)
    np.testing.assert_array_equal(on_auto.user_factors, on_cpu.user_factors)
    np.testing.assert_array_equal(on_auto.item_factors, on_cpu.item_factors)


def test_unknown_device_is_rejected(checkerboard, small_params,
                                    monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(ModelError, match="unknown ALS device 'tpu'"):
        fit_als(checkerboard, small_params, device="tpu")
    with pytest.raises(pydantic.ValidationError, match="als_device"):
        Settings(als_device="tpu")
    assert Settings().als_device == "cpu"
    monkeypatch.setenv("RECSYS_ALS_DEVICE", "auto")
    assert Settings().als_device == "auto"


def test_gpu_fit_builds_implicits_gpu_model_and_returns_a_cpu_model(
        fake_gpu, checkerboard, weighted_params) -> None:
    params = weighted_params
    model = fit_als(checkerboard, params, device="gpu")

    (built,) = fake_gpu.built
    assert built.kwargs == {"factors": params.factors, "regularization": params.regularization,
                            "alpha": 1.0, "iterations": params.iterations,
                            "dtype": np.float32, "random_state": params.seed}
    # implicit's GPU fit does not scale by alpha: fit_als hands it alpha * weighted confidences
    expected = apply_weighting(checkerboard, params.weighting) * np.float32(params.alpha)
    assert built.fitted_on.dtype == np.float32
    np.testing.assert_array_equal(built.fitted_on.toarray(), expected.toarray())

    assert model is built.cpu_model and isinstance(model, AlternatingLeastSquares)
    assert model.alpha == params.alpha  # implicit's explain and recalculate_user scale by it
    # ... and it is exactly the model the CPU path fits, which scales by alpha inside fit
    on_cpu = fit_als(checkerboard, params, device="cpu")
    np.testing.assert_array_equal(model.user_factors, on_cpu.user_factors)
    np.testing.assert_array_equal(model.item_factors, on_cpu.item_factors)
    items, _ = recommend_top_n(model, checkerboard, 3)
    assert items.shape == (20, 3) and np.all(items >= 0)


def test_train_and_evaluate_records_the_device(fake_gpu, weighted_params) -> None:
    data = _interactions(bigger_checkerboard())
    result = train_and_evaluate(data, weighted_params, k=3, als_device="auto")
    assert result.metrics["als_device"] == "gpu"
    assert len(fake_gpu.built) == 2  # the fit on train and the refit on all data
    holdout, refit = fake_gpu.built
    assert refit.fitted_on.shape == data.matrix.shape
    assert result.model is refit.cpu_model
    # the refit starts from the holdout model's factors and runs the refit sweeps only
    assert not holdout.warm_started and refit.warm_started
    np.testing.assert_array_equal(refit.user_factors.array, holdout.cpu_model.user_factors)
    assert refit.kwargs["iterations"] == result.metrics["refit_iterations"] == 3


def test_train_and_evaluate_records_cpu_by_default(no_cuda, weighted_params) -> None:
    result = train_and_evaluate(_interactions(bigger_checkerboard()), weighted_params, k=3)
    assert result.metrics["als_device"] == "cpu"


def test_search_fits_every_trial_on_the_device(fake_gpu) -> None:
    space = SearchSpace.from_dict({"factors": [2, 3], "regularization": [0.1], "alpha": [5.0],
                                   "iterations": [3], "weighting": ["raw"]})
    result, found = search_and_evaluate(_interactions(bigger_checkerboard()), space, seed=3, k=3,
                                        als_device="gpu")
    assert len(found.trials) == 2
    assert len(fake_gpu.built) == 2 + 2  # every trial, then the fit on train and the refit
    assert result.metrics["als_device"] == "gpu"


@pytest.mark.parametrize("search", [False, True])
def test_stage_with_gpu_device_fails_without_cuda(no_cuda, tmp_path: Path, search: bool,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RECSYS_ALS_DEVICE", "gpu")
    settings = Settings(data_dir=tmp_path, eval_k=3, factors=2, regularization=0.1, alpha=5.0,
                        iterations=5, seed=3)
    assert settings.als_device == "gpu"
    manifest = write_snapshot(tmp_path, "s1")
    with pytest.raises(ModelError, match="RECSYS_ALS_DEVICE=gpu"):
        train_run_model(manifest, version="v1", settings=settings, search=search)
    assert not (Path(settings.models_dir) / "v1").exists()
