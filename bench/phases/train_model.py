"""Stage `training`: the pipeline's train and score tasks beside bare implicit fit + recommend."""

from __future__ import annotations

import shutil
import time
from pathlib import Path
from typing import Any

import numpy as np
import scipy.sparse as sp
from implicit.cpu.als import AlternatingLeastSquares
from threadpoolctl import threadpool_limits

from bench.workspace import RUN_ID, Size, bench_settings, phase_main, record_output
from features.snapshot import load_manifest
from recsys.settings import Settings
from training.data import load_interactions
from training.stage import score_run_model, train_run_model


def bare_fit_recommend(matrix: sp.csr_matrix, settings: Settings) -> dict[str, float]:
    """What an implicit user writes: one fit, one recommend(all users), one BLAS thread, with
    the pipeline's parameters; seconds of each."""
    with threadpool_limits(1, "blas"):  # one BLAS thread, as the pipeline runs implicit
        started = time.perf_counter()
        model = AlternatingLeastSquares(
            factors=settings.factors, regularization=settings.regularization,
            alpha=settings.alpha, iterations=settings.iterations, random_state=settings.seed)
        model.fit(matrix, show_progress=False)
        fit_s = time.perf_counter() - started
        started = time.perf_counter()
        model.recommend(np.arange(matrix.shape[0], dtype=np.int32), matrix, N=settings.top_n,
                        filter_already_liked_items=True)
    return {"fit_s": fit_s, "recommend_s": time.perf_counter() - started}


def baseline(work: Path, size: Size, uri: str) -> dict[str, Any]:
    """Bare implicit: one `fit` and one `recommend(all users)` with the pipeline's parameters."""
    settings = bench_settings(work, uri)
    manifest = load_manifest(settings.features_dir, RUN_ID)
    matrix = load_interactions(manifest.view_path("interactions")).matrix
    timed = bare_fit_recommend(matrix, settings)
    return {"seconds": timed["fit_s"] + timed["recommend_s"], "fit_seconds": timed["fit_s"],
            "recommend_seconds": timed["recommend_s"], "nnz": int(matrix.nnz),
            "shape": list(matrix.shape)}


def ours(work: Path, size: Size, uri: str) -> dict[str, Any]:
    """Holdout fit + metrics, refit, top-N, similar items and explanations, as the flow runs."""
    settings = bench_settings(work, uri)
    shutil.rmtree(settings.models_dir, ignore_errors=True)  # the work folder's, from a rerun
    manifest = load_manifest(settings.features_dir, RUN_ID)
    started = time.perf_counter()
    model_dir, result = train_run_model(manifest, version=RUN_ID, settings=settings,
                                        search=False)
    train_s = time.perf_counter() - started
    started = time.perf_counter()
    score_run_model(model_dir, manifest, settings=settings)
    score_s = time.perf_counter() - started
    record_output(work, "model_dir", str(model_dir))
    return {"seconds": train_s + score_s, "train_seconds": train_s, "score_seconds": score_s,
            "timings": result.metrics.get("timings", {}),
            "metrics": {m: result.metrics[m] for m in ("als", "popular")}}


PHASES = {"baseline": baseline, "ours": ours}

if __name__ == "__main__":
    phase_main(PHASES)
