"""The pipeline's train and score stages as plain functions (the flow wraps them in tasks)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from features.snapshot import Manifest
from recsys.errors import ModelError
from recsys.settings import Settings
from training.data import load_interactions
from training.evaluate import TrainResult, train_and_evaluate
from training.model import AlsParams, popular_items, recommend_top_n, similar_items_top_n
from training.registry import load_model, save_model


def params_from_settings(settings: Settings) -> AlsParams:
    return AlsParams(factors=settings.factors, regularization=settings.regularization,
                     alpha=settings.alpha, iterations=settings.iterations, seed=settings.seed)


def train_run_model(manifest: Manifest, *, version: str, settings: Settings
                    ) -> tuple[Path, TrainResult]:
    """Fit on a holdout split, evaluate against popularity, refit on all, save to the registry."""
    data = load_interactions(manifest.view_path("interactions"))
    result = train_and_evaluate(data, params_from_settings(settings), k=settings.eval_k,
                                holdout_fraction=settings.holdout_fraction)
    model_dir = save_model(result, data, models_root=settings.models_dir, version=version,
                           metadata={"feature_snapshot": manifest.snapshot_id})
    return model_dir, result


def score_run_model(model_dir: Path, manifest: Manifest, *, settings: Settings) -> Path:
    """Top-N per user, similar items per item and the popular list, saved as `scores.npz`."""
    model, user_ids, item_ids, _ = load_model(model_dir)
    data = load_interactions(manifest.view_path("interactions"))
    if not (np.array_equal(data.user_ids, user_ids) and np.array_equal(data.item_ids, item_ids)):
        raise ModelError(f"model {model_dir.name} ids do not match snapshot {manifest.snapshot_id}")
    rec_items, rec_scores = recommend_top_n(model, data.matrix, settings.top_n)
    sim_items, sim_scores = similar_items_top_n(model, settings.similar_n)
    pop_items, pop_scores = popular_items(data.matrix, settings.popular_n)
    scores_file = model_dir / "scores.npz"
    np.savez(scores_file, rec_items=rec_items, rec_scores=rec_scores, similar_items=sim_items,
             similar_scores=sim_scores, popular_items=pop_items, popular_scores=pop_scores)
    return scores_file
