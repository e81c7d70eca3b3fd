"""Search: grid/sampling, validation carved from train only, determinism, trial logs."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from recsys.errors import ModelError
from tests.training.helpers import bigger_checkerboard
from training.data import InteractionMatrix
from training.evaluate import split_per_user, split_per_user_by_time
from training.search import SearchSpace, objective_key, search_als, search_and_evaluate

SPACE = SearchSpace(factors=(2, 4), regularization=(0.1,), alpha=(5.0,), iterations=(5,),
                    weighting=("raw", "log1p"))


def test_space_grid_and_from_dict(tmp_path: Path) -> None:
    assert len(SPACE.grid(1)) == 4
    assert {p.seed for p in SPACE.grid(1)} == {1}
    space = SearchSpace.from_dict({"factors": [8, 16], "alpha": 1.0, "weighting": ["bm25"]})
    assert space.factors == (8, 16) and space.alpha == (1.0,) and space.weighting == ("bm25",)
    path = tmp_path / "space.json"
    path.write_text(json.dumps(space.to_dict()))
    assert SearchSpace.from_file(path) == space
    with pytest.raises(ModelError, match="unknown search space keys"):
        SearchSpace.from_dict({"factor": [1]})
    with pytest.raises(ModelError, match="weighting"):
        SearchSpace(weighting=("sqrt",))
    with pytest.raises(ModelError, match="empty"):
        SearchSpace(factors=())
    assert objective_key("map", 10) == "map" and objective_key("recall", 5) == "recall@5"
    with pytest.raises(ModelError):
        objective_key("auc", 10)


def test_search_logs_every_trial_and_picks_the_best() -> None:
    train = bigger_checkerboard()
    result = search_als(train, SPACE, k=3, seed=3, objective="ndcg")
    assert [t.number for t in result.trials] == [0, 1, 2, 3]
    scores = [t.metrics["ndcg@3"] for t in result.trials]
    assert result.best_trial == int(np.argmax(scores))
    assert result.best == result.trials[result.best_trial].params
    v = result.validation
    assert v["fit_interactions"] + v["validation_interactions"] == train.nnz
    lines = result.trials_jsonl().splitlines()
    assert len(lines) == 4 and json.loads(lines[0])["params"]["weighting"] == "raw"
    table = result.trials_markdown().splitlines()
    assert len(table) == 2 + 4 and "ndcg@3" in table[0]
    assert table[2 + result.best_trial].startswith(f"| {result.best_trial}*")
    assert result.summary()["n_trials"] == 4


def test_search_is_deterministic_and_samples_with_a_seed() -> None:
    train = bigger_checkerboard()
    a = search_als(train, SPACE, k=3, seed=5, max_trials=2)
    b = search_als(train, SPACE, k=3, seed=5, max_trials=2)
    assert len(a.trials) == 2
    assert [t.params for t in a.trials] == [t.params for t in b.trials]
    assert [t.metrics for t in a.trials] == [t.metrics for t in b.trials]
    with pytest.raises(ModelError):
        search_als(train, SPACE, k=3, max_trials=0)


def test_search_and_evaluate_never_sees_the_test_split(monkeypatch) -> None:
    import training.search as search_module

    matrix = bigger_checkerboard()
    ids = np.array([f"u{i:03d}" for i in range(matrix.shape[0])], dtype=object)
    data = InteractionMatrix(user_ids=ids, item_ids=ids[: matrix.shape[1]].copy(), matrix=matrix)
    seen = {}
    original = search_module.search_als

    def spy(train, *args, **kwargs):
        seen["train"] = train
        return original(train, *args, **kwargs)

    monkeypatch.setattr(search_module, "search_als", spy)
    result, search = search_and_evaluate(data, SPACE, seed=9, k=3)
    train, test = split_per_user(matrix, 0.25, seed=9)
    assert (seen["train"] != train).nnz == 0              # the search got exactly the train part
    assert seen["train"].multiply(test).nnz == 0
    assert result.params == search.best
    assert result.metrics["split_seed"] == 9
    assert result.model.user_factors.shape[0] == matrix.shape[0]   # refitted on all data


def test_time_split_search_validates_on_the_latest_share_of_train(monkeypatch) -> None:
    import training.search as search_module

    matrix = bigger_checkerboard()
    ids = np.array([f"u{i:03d}" for i in range(matrix.shape[0])], dtype=object)
    last_ts = np.random.default_rng(2).integers(0, 10**6, matrix.nnz).astype(np.float64)
    data = InteractionMatrix(user_ids=ids, item_ids=ids[: matrix.shape[1]].copy(), matrix=matrix,
                             last_ts=last_ts)
    scored = []
    original = search_module.ranking_metrics

    def spy(recommended, test, *args, **kwargs):
        scored.append(test)
        return original(recommended, test, *args, **kwargs)

    monkeypatch.setattr(search_module, "ranking_metrics", spy)
    result, search = search_and_evaluate(data, SPACE, seed=9, k=3, split="time", max_trials=2)
    train, _, train_last_ts = split_per_user_by_time(matrix, last_ts, 0.25, seed=9)
    _, validation, _ = split_per_user_by_time(train, train_last_ts, 0.25, seed=10)
    assert len(scored) == 2                                     # one validation per trial
    assert all((v != validation).nnz == 0 for v in scored)
    assert (validation != split_per_user(train, 0.25, seed=10)[1]).nnz > 0   # not the random one
    assert search.validation["split"] == "time"
    assert result.metrics["holdout_split"] == "time" and result.metrics["split_seed"] == 9
