"""The pipeline's train and score stages as plain functions (the flow wraps them in tasks)."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
import scipy.sparse as sp
from implicit.cpu.als import AlternatingLeastSquares

from features.snapshot import Manifest
from recsys.errors import ModelError
from recsys.hashing import file_sha256
from recsys.progress import ProgressCallback
from recsys.settings import Settings
from training import gpu_scoring
from training.data import load_interactions, to_csr
from training.evaluate import TrainResult, train_and_evaluate
from training.explain import explain_recommendations
from training.model import (
    AlsParams,
    apply_weighting,
    popular_items,
    recommend_top_n,
    similar_items_top_n,
)
from training.registry import load_model, save_model, save_scores
from training.search import SearchSpace, search_and_evaluate

log = logging.getLogger(__name__)

SEARCH_TRIALS_JSONL = "search_trials.jsonl"
SEARCH_TRIALS_MD = "search_trials.md"


def params_from_settings(settings: Settings) -> AlsParams:
    """The fixed ALS hyperparameters of `settings` (used when no search runs)."""
    return AlsParams(factors=settings.factors, regularization=settings.regularization,
                     alpha=settings.alpha, iterations=settings.iterations, seed=settings.seed,
                     weighting=settings.weighting)


def search_space_from_settings(settings: Settings) -> SearchSpace:
    """`settings.search_space_file` when set, else the default SearchSpace."""
    if settings.search_space_file is None:
        return SearchSpace()
    return SearchSpace.from_file(settings.search_space_file)


def _data_hashes(manifest: Manifest) -> dict[str, Any]:
    """sha256 of the interactions view file(s) and of the batch files the snapshot was built from."""
    view = manifest.view_path("interactions")
    files = [view] if view.is_file() else sorted(view.rglob("*.parquet"))
    return {"interactions_view": {str(f): file_sha256(f) for f in files},
            "sources": {name: source.get("sha256") for name, source in manifest.sources.items()}}


def train_run_model(manifest: Manifest, *, version: str, settings: Settings,
                    search: bool | None = None,
                    progress: ProgressCallback | None = None) -> tuple[Path, TrainResult]:
    """Fit on a holdout split, evaluate against popularity, refit on all, save to the registry.

    Args:
        manifest: the feature snapshot to train on.
        version: the model version id.
        settings: hyperparameters, protocol and paths.
        search: choose hyperparameters with `training.search` on a validation split carved from
            the training part (the trials are saved as search_trials.jsonl / .md in the model
            directory); None follows `settings.search`.
        progress: told the search trials, ALS iterations and evaluation batches as they finish.

    Returns:
        (model directory, TrainResult with the holdout metrics of the chosen parameters).
    """
    data = load_interactions(manifest.view_path("interactions"),
                             with_last_ts=settings.holdout_split == "time")
    metadata: dict[str, Any] = {"feature_snapshot": manifest.snapshot_id,
                                "data_hashes": _data_hashes(manifest)}
    extra_files: dict[str, str] = {}
    if settings.search if search is None else search:
        result, found = search_and_evaluate(
            data, search_space_from_settings(settings), seed=settings.seed, k=settings.eval_k,
            holdout_fraction=settings.holdout_fraction, split=settings.holdout_split,
            objective=settings.search_objective,
            max_eval_users=settings.eval_max_users,
            max_trials=settings.search_max_trials, als_device=settings.als_device,
            progress=progress)
        metadata["search"] = found.summary()
        extra_files = {SEARCH_TRIALS_JSONL: found.trials_jsonl(),
                       SEARCH_TRIALS_MD: found.trials_markdown()}
    else:
        result = train_and_evaluate(data, params_from_settings(settings), k=settings.eval_k,
                                    holdout_fraction=settings.holdout_fraction,
                                    split=settings.holdout_split,
                                    max_eval_users=settings.eval_max_users,
                                    als_device=settings.als_device, progress=progress)
    model_dir = save_model(result, data, models_root=settings.models_dir, version=version,
                           metadata=metadata, extra_files=extra_files)
    return model_dir, result


def _recommend_all_users(model: AlternatingLeastSquares, matrix: sp.csr_matrix,
                         settings: Settings, progress: ProgressCallback | None
                         ) -> tuple[np.ndarray, np.ndarray]:
    """Top `settings.top_n` unseen items of every user on `settings.score_backend`."""
    if settings.score_backend == "gpu":
        # torch is optional: gpu_scoring imports it only when it runs
        return gpu_scoring.recommend_top_n_torch(model, matrix, settings.top_n, device="cuda")
    return recommend_top_n(model, matrix, settings.top_n, progress=progress,
                           step="score users")


def score_run_model(model_dir: Path, manifest: Manifest, *, settings: Settings,
                    progress: ProgressCallback | None = None) -> Path:
    """Top-N per user, similar items per item, the popular list and, when `settings.explain_n`
    > 0, the past items that explain each recommendation; saved (atomically) as the version's
    scores by `training.registry.save_scores`.

    scores.npz keys: rec_items, rec_scores (n_users, N); similar_items, similar_scores
    (n_items, M); popular_items, popular_scores (P,); and with explanations rec_explain_items
    (n_users, N, E) int32 (-1 pads) and rec_explain_scores (n_users, N, E) float32.

    The top-N per user runs on `settings.score_backend`: implicit on the CPU, or torch on a CUDA
    GPU (`training.gpu_scoring`; a ModelError when torch or CUDA is missing, never a fall-back).
    `progress` is told the users scored (CPU backend) and the items done for similar items,
    batch by batch (steps ``score users`` and ``similar items``).
    """
    model, user_ids, item_ids, metadata = load_model(model_dir)
    data = load_interactions(manifest.view_path("interactions"))
    if not (np.array_equal(data.user_ids, user_ids) and np.array_equal(data.item_ids, item_ids)):
        raise ModelError(f"model {model_dir.name} ids do not match snapshot {manifest.snapshot_id}")
    rec_items, rec_scores = _recommend_all_users(model, data.matrix, settings, progress)
    sim_items, sim_scores = similar_items_top_n(model, settings.similar_n, progress=progress)
    pop_items, pop_scores = popular_items(data.matrix, settings.popular_n)
    arrays: dict[str, np.ndarray] = {
        "rec_items": rec_items, "rec_scores": rec_scores, "similar_items": sim_items,
        "similar_scores": sim_scores, "popular_items": pop_items, "popular_scores": pop_scores}
    if settings.explain_n > 0:
        params = AlsParams(**metadata["params"])
        confidence = to_csr(apply_weighting(data.matrix, params.weighting) * params.alpha)
        explain_items, explain_scores = explain_recommendations(
            np.asarray(model.item_factors), confidence, rec_items,
            regularization=params.regularization, n_explain=settings.explain_n)
        arrays["rec_explain_items"] = explain_items
        arrays["rec_explain_scores"] = explain_scores
    return save_scores(model_dir, arrays)
