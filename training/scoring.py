"""The score stage's part function: one user partition (or the items) of a saved model.

`training.stage.score_run_model` fans `score_part` out through a `recsys.partitions.Mapper`:
parts 0 .. n-1 are the user partitions (`partition_of` of the user id), part n the items (similar
items and the popular list). A part takes the model directory and plain values, so it pickles by
reference and runs in this process, in a process pool or on a Dask worker alike; it writes its
file through `training.scores` (atomically, the same bytes on a rerun) and returns its name and
sha256 for the stage to commit.

On the CPU backend a user's list and scores do not depend on the partition it was scored in
(`training.model.recommend_top_n`), so any partition count gives the same scores; the torch
backend agrees to float32 rounding.

Each process loads the model, its ids and its training matrix once (`scoring_inputs`, keyed by
the directory and the checksums the registry recorded), so a worker that runs several parts reads
the fitted factors once; only one model is kept per process.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import scipy.sparse as sp
from implicit.cpu.als import AlternatingLeastSquares

from recsys.errors import ModelError
from recsys.partitions import partition_of
from training import gpu_scoring
from training.data import to_csr
from training.explain import explain_recommendations
from training.model import (
    AlsParams,
    apply_weighting,
    popular_items,
    recommend_top_n,
    similar_items_top_n,
)
from training.model_files import MATRIX_FILE, MODEL_FILE
from training.registry import load_model, load_training_matrix, model_metadata
from training.scores import ITEMS_PART, user_part_name, write_score_part

log = logging.getLogger(__name__)

SCORE_BACKENDS = ("cpu", "gpu")


@dataclass
class ScoringInputs:
    """What every part of one model needs, loaded once per process."""

    model: AlternatingLeastSquares
    user_ids: np.ndarray
    item_ids: np.ndarray
    params: AlsParams
    matrix: sp.csr_matrix
    _confidence: sp.csr_matrix | None = None
    _partitions: dict[int, np.ndarray] = field(default_factory=dict)

    @property
    def confidence(self) -> sp.csr_matrix:
        """alpha * weighting(matrix): exactly what ALS was fitted on (for explanations)."""
        if self._confidence is None:
            weighted = apply_weighting(self.matrix, self.params.weighting)
            self._confidence = to_csr(weighted * np.float32(self.params.alpha))
        return self._confidence

    def users_of(self, part: int, n_partitions: int) -> np.ndarray:
        """Ascending row indices of the users in partition `part` of `n_partitions`."""
        if n_partitions not in self._partitions:
            self._partitions[n_partitions] = partition_of(self.user_ids, n_partitions)
        return np.flatnonzero(self._partitions[n_partitions] == part).astype(np.int64)


_CACHE: dict[str, ScoringInputs] = {}


def scoring_inputs(model_dir: Path) -> ScoringInputs:
    """The model, ids, parameters and training matrix of `model_dir`, cached per process.

    The cache key holds the recorded checksums of model.npz and matrix.npz, so a directory that
    now holds another model (same name, new files) is loaded again.

    Raises:
        ModelError: a file is missing, damaged or does not fit the model.
    """
    model_dir = Path(model_dir).resolve()
    checksums = model_metadata(model_dir).get("checksums", {})
    key = f"{model_dir}|{checksums.get(MODEL_FILE)}|{checksums.get(MATRIX_FILE)}"
    cached = _CACHE.get(key)
    if cached is None:
        _CACHE.clear()  # one model per process: the previous one is not needed any more
        start = time.perf_counter()
        model, user_ids, item_ids, metadata = load_model(model_dir)
        cached = ScoringInputs(model=model, user_ids=user_ids, item_ids=item_ids,
                               params=AlsParams(**metadata["params"]),
                               matrix=load_training_matrix(model_dir))
        _CACHE[key] = cached
        log.info("loaded model %s for scoring in %.2fs", model_dir.name,
                 time.perf_counter() - start)
    return cached


def release_scoring_inputs() -> None:
    """Drop the cached model of this process (the stage calls it when it is done)."""
    _CACHE.clear()


def score_part(model_dir: str, part: int, n_partitions: int, top_n: int, explain_n: int,
               similar_n: int, popular_n: int, backend: str = "cpu") -> tuple[str, str, int]:
    """Score part `part` of the version in `model_dir` and write its file.

    Args:
        model_dir: the saved version (a path every worker can read and write).
        part: 0 .. n_partitions - 1 for a user partition, n_partitions for the items.
        n_partitions: how many user partitions the stage uses.
        top_n: recommendations per user.
        explain_n: past items explaining each recommendation (0: none).
        similar_n: similar items per item.
        popular_n: length of the popular list.
        backend: "cpu" (implicit) or "gpu" (torch on CUDA) for the users' top-N.

    Returns:
        (part file name relative to the version, its sha256, rows written).

    Raises:
        ModelError: the version cannot be read, a bad part or backend, or the write failed.
    """
    if backend not in SCORE_BACKENDS:
        raise ModelError(f"unknown score backend {backend!r}; expected one of {SCORE_BACKENDS}")
    if not 0 <= part <= n_partitions:
        raise ModelError(f"part {part} is not in [0, {n_partitions}]")
    start = time.perf_counter()
    inputs = scoring_inputs(Path(model_dir))
    if part == n_partitions:
        sim_items, sim_scores = similar_items_top_n(inputs.model, similar_n)
        pop_items, pop_scores = popular_items(inputs.matrix, popular_n)
        arrays = {"similar_items": sim_items, "similar_scores": sim_scores,
                  "popular_items": pop_items, "popular_scores": pop_scores}
        name, rows = ITEMS_PART, len(sim_items)
    else:
        users = inputs.users_of(part, n_partitions)
        arrays = {"user_index": users, **_user_scores(inputs, users, top_n, explain_n, backend)}
        name, rows = user_part_name(part, n_partitions), len(users)
    digest = write_score_part(Path(model_dir), name, arrays)
    log.info("scored %s of model %s (%d rows) in %.2fs", name, Path(model_dir).name, rows,
             time.perf_counter() - start)
    return name, digest, rows


def _user_scores(inputs: ScoringInputs, users: np.ndarray, top_n: int, explain_n: int,
                 backend: str) -> dict[str, np.ndarray]:
    """Top-N (seen items filtered out) and, with `explain_n`, the explaining past items."""
    if backend == "gpu":
        # torch is optional: gpu_scoring imports it only when it runs
        items, scores = gpu_scoring.recommend_top_n_torch(inputs.model, inputs.matrix, top_n,
                                                          device="cuda", users=users)
    else:
        items, scores = recommend_top_n(inputs.model, inputs.matrix, top_n, users=users)
    out = {"rec_items": items, "rec_scores": scores}
    if explain_n > 0:
        explain_items, explain_scores = explain_recommendations(
            np.asarray(inputs.model.item_factors), inputs.confidence[users], items,
            regularization=inputs.params.regularization, n_explain=explain_n)
        out.update(rec_explain_items=explain_items, rec_explain_scores=explain_scores)
    return out
