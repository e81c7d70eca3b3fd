"""The pipeline's train and score stages as plain functions (the flow wraps them in tasks)."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from features.snapshot import Manifest
from recsys.errors import ModelError
from recsys.hashing import file_sha256
from recsys.partitions import Mapper, serial_map
from recsys.progress import ProgressCallback, report_progress
from recsys.settings import Settings
from training.data import load_interactions
from training.evaluate import TrainResult, train_and_evaluate
from training.model import AlsParams
from training.registry import model_metadata, save_model
from training.scores import ITEMS_PART, commit_scores, start_scores
from training.scoring import release_scoring_inputs, score_part
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
    """Fit on a holdout split, evaluate against popularity, fit on all data warm-started from the
    holdout model, save to the registry.

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
            refit_iterations=settings.refit_iterations, progress=progress)
        metadata["search"] = found.summary()
        extra_files = {SEARCH_TRIALS_JSONL: found.trials_jsonl(),
                       SEARCH_TRIALS_MD: found.trials_markdown()}
    else:
        result = train_and_evaluate(data, params_from_settings(settings), k=settings.eval_k,
                                    holdout_fraction=settings.holdout_fraction,
                                    split=settings.holdout_split,
                                    max_eval_users=settings.eval_max_users,
                                    als_device=settings.als_device,
                                    refit_iterations=settings.refit_iterations,
                                    progress=progress)
    model_dir = save_model(result, data, models_root=settings.models_dir, version=version,
                           metadata=metadata, extra_files=extra_files)
    return model_dir, result


def score_run_model(model_dir: Path, manifest: Manifest, *, settings: Settings,
                    progress: ProgressCallback | None = None,
                    mapper: Mapper = serial_map) -> Path:
    """Top-N per user, similar items per item, the popular list and, when `settings.explain_n`
    > 0, the past items that explain each recommendation; saved as the version's scores.

    The work runs as `settings.partition_count` user partitions plus one items part, each a call
    of `training.scoring.score_part` through `mapper` (`recsys.partitions`): in this process by
    default, on Dask workers when the flow passes its mapper. Every part writes its own file;
    once all are written the scores are committed in one metadata write
    (`training.scores.commit_scores`), so a failed or interrupted run leaves the version
    unscored. See `training.scores` for the layout and its readers (`load_score_part`,
    `load_item_scores`, `load_scores`).

    The top-N per user runs on `settings.score_backend`: implicit on the CPU, or torch on a CUDA
    GPU (`training.gpu_scoring`; a ModelError when torch or CUDA is missing, never a fall-back).
    `progress` is told the users scored and the items done (steps ``score users`` and
    ``similar items``) once the parts have finished.

    Returns:
        The version's scores folder.

    Raises:
        ModelError: the version was trained on another feature snapshot, cannot be read, or a
            part failed.
    """
    model_dir = Path(model_dir)
    metadata = model_metadata(model_dir)
    trained_on = metadata.get("feature_snapshot")
    if trained_on is not None and trained_on != manifest.snapshot_id:
        raise ModelError(f"model {model_dir.name} was trained on feature snapshot {trained_on}, "
                         f"not {manifest.snapshot_id}")
    n_parts = settings.partition_count
    start_scores(model_dir)
    # the items part first: with several workers it runs beside the user parts
    args = [(str(model_dir), part, n_parts, settings.top_n, settings.explain_n,
             settings.similar_n, settings.popular_n, settings.score_backend)
            for part in (n_parts, *range(n_parts))]
    try:
        done = mapper("score", score_part, args)
    finally:
        release_scoring_inputs()  # the local parts' model copy; workers keep theirs
    rows = {name: count for name, _, count in done}
    report_progress(progress, "score users", int(metadata["n_users"]), int(metadata["n_users"]))
    report_progress(progress, "similar items", rows[ITEMS_PART], rows[ITEMS_PART])
    return commit_scores(model_dir, n_parts, {name: digest for name, digest, _ in done},
                         explained=settings.explain_n > 0)
