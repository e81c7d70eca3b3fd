"""Hyperparameter search for implicit ALS on a validation split carved from training data.

The protocol never looks at the test split: the caller splits its data into train/test, hands
only `train` here, and this module splits `train` again per user into fit/validation, the same way
(random, or by time: then validation is each user's latest share of train). Every trial
fits on `fit`, recommends with the `fit` items filtered out and is scored on `validation`; the best
trial on `objective` wins (ties: the earlier trial). The search is a grid over `SearchSpace`, or a
seeded random sample of that grid when `max_trials` is smaller than the grid, so a search is
deterministic for a seed (up to implicit's own multithreading noise, benfred/implicit#263).

Every trial is logged (module logger) and returned; `trials_jsonl` / `trials_markdown` render them
for the model directory.
"""

from __future__ import annotations

import itertools
import json
import logging
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import scipy.sparse as sp

from recsys.errors import ModelError
from recsys.progress import ProgressCallback, report_progress
from training.data import InteractionMatrix, check_csr
from training.evaluate import (
    REFIT_ITERATIONS,
    TrainResult,
    evaluate_and_refit,
    evaluation_users,
    holdout_split,
    ranking_metrics,
)
from training.model import WEIGHTINGS, AlsParams, fit_als, recommend_top_n

log = logging.getLogger(__name__)

OBJECTIVES = ("precision", "recall", "ndcg", "map")
_SPACE_KEYS = ("factors", "regularization", "alpha", "iterations", "weighting")


@dataclass(frozen=True, kw_only=True)
class SearchSpace:
    """The values tried for each hyperparameter (the grid is their cross product).

    The default is small on purpose (8 trials): on MovieLens 100K with ratings as weights the
    winners sit at regularization ~ 25 x alpha with alpha ~ 2 (see docs/benchmarks.md, "Training",
    for the wider sweep it was narrowed from).
    """

    factors: tuple[int, ...] = (32, 48)
    regularization: tuple[float, ...] = (40.0, 50.0)
    alpha: tuple[float, ...] = (2.0,)
    iterations: tuple[int, ...] = (15,)
    weighting: tuple[str, ...] = ("raw", "log1p")

    def __post_init__(self) -> None:
        for name in _SPACE_KEYS:
            values = getattr(self, name)
            if not values:
                raise ModelError(f"search space '{name}' is empty")
        unknown = sorted(set(self.weighting) - set(WEIGHTINGS))
        if unknown:
            raise ModelError(f"search space 'weighting' has unknown values {unknown}; "
                             f"expected some of {WEIGHTINGS}")

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> SearchSpace:
        """Build from `{"factors": [..], "alpha": [..], ...}`; unknown keys are an error."""
        unknown = sorted(set(data) - set(_SPACE_KEYS))
        if unknown:
            raise ModelError(f"unknown search space keys {unknown}; expected {_SPACE_KEYS}")
        values = {}
        for key, value in data.items():
            seq = value if isinstance(value, (list, tuple)) else [value]
            values[key] = tuple(seq)
        return cls(**values)

    @classmethod
    def from_file(cls, path: Path) -> SearchSpace:
        """Read a JSON object as for `from_dict`."""
        path = Path(path)
        try:
            data = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError) as exc:
            raise ModelError(f"cannot read search space {path}: {exc}") from exc
        if not isinstance(data, dict):
            raise ModelError(f"search space {path} must hold a JSON object")
        return cls.from_dict(data)

    def grid(self, seed: int) -> list[AlsParams]:
        """Every combination, in a fixed order, as AlsParams seeded with `seed`."""
        return [AlsParams(factors=int(f), regularization=float(r), alpha=float(a),
                          iterations=int(i), weighting=str(w), seed=seed)
                for w, f, r, a, i in itertools.product(self.weighting, self.factors,
                                                       self.regularization, self.alpha,
                                                       self.iterations)]

    def to_dict(self) -> dict[str, list[Any]]:
        return {key: list(value) for key, value in asdict(self).items()}


@dataclass(frozen=True)
class Trial:
    """One fitted configuration and its validation metrics."""

    number: int
    params: AlsParams
    metrics: dict[str, float]
    fit_seconds: float

    def to_dict(self) -> dict[str, Any]:
        return {"trial": self.number, "params": self.params.to_dict(), "metrics": self.metrics,
                "fit_seconds": self.fit_seconds}


@dataclass
class SearchResult:
    """Outcome of `search_als`.

    Attributes:
        best: the winning parameters.
        best_trial: its trial number.
        objective: the metric key maximised, e.g. "ndcg@10".
        trials: every trial in the order it ran.
        space: the space searched.
        validation: how the validation split was carved (fraction, split, seed, sizes).
        seconds: wall time of the search.
    """

    best: AlsParams
    best_trial: int
    objective: str
    trials: list[Trial]
    space: SearchSpace
    validation: dict[str, Any] = field(default_factory=dict)
    seconds: float = 0.0

    def summary(self) -> dict[str, Any]:
        """A JSON-serialisable summary for the model metadata."""
        return {"objective": self.objective, "best_trial": self.best_trial,
                "best_params": self.best.to_dict(), "n_trials": len(self.trials),
                "space": self.space.to_dict(), "validation": self.validation,
                "seconds": round(self.seconds, 3),
                "best_validation_metrics": self.trials[self.best_trial].metrics}

    def trials_jsonl(self) -> str:
        """One JSON object per trial and line."""
        return "".join(json.dumps(t.to_dict(), sort_keys=True) + "\n" for t in self.trials)

    def trials_markdown(self) -> str:
        """A markdown table of every trial; the winner is marked with `*`."""
        if not self.trials:
            return ""
        metric_names = [m for m in self.trials[0].metrics if m != "users"]
        head = ["trial", "weighting", "factors", "regularization", "alpha", "iterations",
                *metric_names, "fit s"]
        lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        for t in self.trials:
            p = t.params
            mark = "*" if t.number == self.best_trial else ""
            cells = [f"{t.number}{mark}", p.weighting, str(p.factors), f"{p.regularization:g}",
                     f"{p.alpha:g}", str(p.iterations),
                     *(f"{t.metrics[m]:.4f}" for m in metric_names), f"{t.fit_seconds:.2f}"]
            lines.append("| " + " | ".join(cells) + " |")
        return "\n".join(lines) + "\n"


def objective_key(objective: str, k: int) -> str:
    """'ndcg' -> 'ndcg@10' ('map' stays 'map'); raises ModelError for an unknown objective."""
    if objective not in OBJECTIVES:
        raise ModelError(f"unknown objective {objective!r}; expected one of {OBJECTIVES}")
    return "map" if objective == "map" else f"{objective}@{k}"


def search_als(train: sp.csr_matrix, space: SearchSpace, *, k: int = 10,
               validation_fraction: float = 0.25, split: str = "random",
               train_last_ts: np.ndarray | None = None, seed: int = 42, objective: str = "ndcg",
               max_trials: int | None = None, num_threads: int = 0,
               max_eval_users: int | None = None, als_device: str = "cpu",
               progress: ProgressCallback | None = None) -> SearchResult:
    """Pick ALS hyperparameters on a validation split carved from `train` only.

    Args:
        train: (n_users, n_items) weights of the TRAINING part (never pass test data here).
        space: values to try.
        k: cut-off of the validation metrics.
        validation_fraction: per-user share of `train` held out for validation.
        split: how validation is carved (`training.evaluate.holdout_split`): "random", or "time"
            (each user's latest share of `train`, by `train_last_ts`).
        train_last_ts: (train.nnz,) pair times in the order of `train.data`; "time" needs it.
        seed: seeds the validation split (with `seed + 1`, so it differs from a test split made
            with `seed`), the trial sampling and every model.
        objective: "precision", "recall", "ndcg" or "map" (at k), maximised.
        max_trials: when smaller than the grid, a seeded random sample of the grid is tried.
        num_threads: implicit's threads per fit (0 = all cores).
        max_eval_users: score a seeded sample of this many users per trial (None: all).
        als_device: where every trial fits: "cpu", "gpu" or "auto" (`training.model.fit_als`).
        progress: told after each trial (step ``search trials``, trials done, trials).

    Returns:
        The SearchResult; `best` carries `seed`.
    """
    check_csr(train, name="search_als train")
    key = objective_key(objective, k)
    start = time.perf_counter()
    fit_part, validation, _ = holdout_split(train, validation_fraction, seed + 1, split=split,
                                            last_ts=train_last_ts)
    if validation.nnz == 0:
        raise ModelError("validation split is empty: too few interactions per user to search")
    candidates = space.grid(seed)
    if max_trials is not None:
        if max_trials < 1:
            raise ModelError(f"max_trials must be >= 1, got {max_trials}")
        if max_trials < len(candidates):
            rng = np.random.default_rng(seed)
            picked = np.sort(rng.choice(len(candidates), size=max_trials, replace=False))
            candidates = [candidates[i] for i in picked]
    sample = evaluation_users(train.shape[0], max_eval_users, seed + 1)
    if sample is not None:
        validation = validation[sample]
    log.info("search: %d trials on %d fit / %d validation interactions, objective %s",
             len(candidates), fit_part.nnz, validation.nnz, key)

    trials: list[Trial] = []
    for number, params in enumerate(candidates):
        t0 = time.perf_counter()
        model = fit_als(fit_part, params, num_threads=num_threads, device=als_device)
        seconds = time.perf_counter() - t0
        recs, _ = recommend_top_n(model, fit_part, k, users=sample)
        metrics = ranking_metrics(recs, validation, k, n_items=train.shape[1])
        trial = Trial(number=number, params=params, metrics=metrics,
                      fit_seconds=round(seconds, 4))
        trials.append(trial)
        log.info("search trial %d/%d %s: %s=%.4f (fit %.2fs)", number + 1, len(candidates),
                 params.to_dict(), key, metrics[key], seconds)
        report_progress(progress, "search trials", number + 1, len(candidates))

    scores = np.array([t.metrics[key] for t in trials])
    best = int(np.argmax(scores))  # first maximum: ties go to the earlier trial
    result = SearchResult(
        best=trials[best].params, best_trial=best, objective=key, trials=trials, space=space,
        validation={"fraction": validation_fraction, "split": split, "seed": seed + 1,
                    "fit_interactions": int(fit_part.nnz),
                    "validation_interactions": int(validation.nnz)},
        seconds=time.perf_counter() - start,
    )
    log.info("search chose trial %d %s (%s=%.4f) in %.1fs", best, result.best.to_dict(), key,
             scores[best], result.seconds)
    return result


def search_and_evaluate(data: InteractionMatrix, space: SearchSpace, *, seed: int, k: int = 10,
                        holdout_fraction: float = 0.25, split: str = "random",
                        objective: str = "ndcg", max_trials: int | None = None,
                        num_threads: int = 0, max_eval_users: int | None = None,
                        als_device: str = "cpu", refit_iterations: int = REFIT_ITERATIONS,
                        progress: ProgressCallback | None = None
                        ) -> tuple[TrainResult, SearchResult]:
    """The full protocol: holdout split -> search on train only -> test metrics -> fit on all
    (warm-started from the test model, `training.evaluate.evaluate_and_refit`).

    Args:
        data: all interactions.
        space: the search space.
        seed: seeds the holdout split (`seed`), the validation split (`seed + 1`) and the models.
        k: cut-off for validation and test metrics.
        holdout_fraction: per-user test share; the validation share of train is the same.
        split: "random", or "time" (test is each user's latest share, from `data.last_ts`, and
            validation the latest share of train); see `training.evaluate.holdout_split`.
        objective: metric maximised on validation.
        max_trials: optional cap (seeded random sample of the grid).
        num_threads: implicit's threads.
        max_eval_users: evaluate trials and the test split on a seeded sample of this many
            users (`training.evaluate.evaluation_users`); None: all users.
        als_device: where the trials and the final fits run (`training.model.fit_als`).
        refit_iterations: sweeps of the warm-started fit on all data (`evaluate_and_refit`).
        progress: told after each trial, then as `evaluate_and_refit` goes.

    Returns:
        (TrainResult of the chosen parameters with its test metrics and the model fitted on all
        data, SearchResult with every trial).
    """
    train, test, train_last_ts = holdout_split(data.matrix, holdout_fraction, seed, split=split,
                                               last_ts=data.last_ts)
    search = search_als(train, space, k=k, validation_fraction=holdout_fraction, split=split,
                        train_last_ts=train_last_ts, seed=seed, objective=objective,
                        max_trials=max_trials, num_threads=num_threads,
                        max_eval_users=max_eval_users, als_device=als_device,
                        progress=progress)
    result = evaluate_and_refit(data, train, test, search.best, k=k,
                                holdout_fraction=holdout_fraction, split=split,
                                num_threads=num_threads, max_eval_users=max_eval_users,
                                als_device=als_device, refit_iterations=refit_iterations,
                                progress=progress)
    return result, search
