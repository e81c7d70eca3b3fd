"""Train/score stages with search and explanations, the champion/challenger gate and
`recsys models ...`, against a real secantusd-py server."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from recsys.errors import ModelError
from recsys.settings import Settings
from serving.artifacts import load_payload
from serving.publish import publish_model
from serving.store import open_store
from tests.training.helpers import BAD, GOOD, write_snapshot
from training import gate
from training.data import load_interactions
from training.evaluate import split_per_user, split_per_user_by_time
from training.gate import champion_recommendations, decide
from training.scores import load_scores
from training.stage import score_run_model, train_run_model

pytestmark = pytest.mark.integration


def settings_for(tmp_path: Path, mongo_uri: str, db: str, params: dict, **extra) -> Settings:
    return Settings(mongodb_uri=mongo_uri, mongodb_db=db, data_dir=tmp_path, top_n=5,
                    similar_n=3, popular_n=5, eval_k=3, holdout_fraction=0.25, explain_n=2,
                    **params, **extra)


def test_train_with_search_then_score_with_explanations(tmp_path: Path, mongo_uri: str,
                                                        mongo_db_name: str) -> None:
    manifest = write_snapshot(tmp_path, "s1")
    space = tmp_path / "space.json"
    space.write_text(json.dumps({"factors": [2, 3], "regularization": [0.1], "alpha": [5.0],
                                 "iterations": [5], "weighting": ["raw", "log1p"]}))
    settings = settings_for(tmp_path, mongo_uri, mongo_db_name, GOOD, search_space_file=space)
    model_dir, result = train_run_model(manifest, version="v1", settings=settings, search=True)

    meta = json.loads((model_dir / "metadata.json").read_text())
    assert meta["search"]["n_trials"] == 4 and meta["params"] == result.params.to_dict()
    assert meta["params"] == meta["search"]["best_params"]
    assert len((model_dir / "search_trials.jsonl").read_text().splitlines()) == 4
    assert "| trial |" in (model_dir / "search_trials.md").read_text()
    assert meta["feature_snapshot"] == "s1" and len(meta["data_hash"]) == 64
    assert next(iter(meta["data_hashes"]["interactions_view"].values())) != ""
    assert {"implicit", "numpy", "scipy", "python"} <= set(meta["libraries"])

    assert score_run_model(model_dir, manifest, settings=settings) == model_dir / "scores"
    scores = load_scores(model_dir)
    explain_items = scores["rec_explain_items"]
    assert explain_items.shape == (80, 5, 2)
    assert scores["rec_explain_scores"].dtype == np.float32
    # explanations are the user's own past items
    data = load_interactions(manifest.view_path("interactions"))
    for user in (0, 41, 79):
        valid = explain_items[user][explain_items[user] >= 0]
        assert valid.size and set(valid.tolist()) <= set(data.matrix[user].indices.tolist())
    payload = load_payload(model_dir)
    assert payload.rec_explain_items is not None
    np.testing.assert_array_equal(payload.rec_explain_items, explain_items)

    # the search is off by default: fixed parameters, no trial files
    plain_dir, plain = train_run_model(manifest, version="v2", settings=settings)
    assert plain.params.factors == GOOD["factors"] and not (plain_dir / "search_trials.md").exists()


def test_gate_publishes_first_keeps_a_better_champion_and_cli(tmp_path: Path, mongo_uri: str,
                                                             mongo_db_name: str,
                                                             monkeypatch) -> None:
    manifest = write_snapshot(tmp_path, "s1")
    good = settings_for(tmp_path, mongo_uri, mongo_db_name, GOOD)
    bad = settings_for(tmp_path, mongo_uri, mongo_db_name, BAD)

    good_dir, _ = train_run_model(manifest, version="good", settings=good)
    first = decide(good_dir, manifest, champion_version=None, settings=good)
    assert first.publish and first.champion_version is None and "no active" in first.reason
    score_run_model(good_dir, manifest, settings=good)
    publish_model(good, "good")

    bad_dir, _ = train_run_model(manifest, version="bad", settings=bad)
    with open_store(bad) as store:   # the flow's gate task asks the serving store the same way
        champion = store.active_version()
    kept = decide(bad_dir, manifest, champion_version=champion, settings=bad)
    assert not kept.publish and kept.champion_version == "good"
    assert kept.champion_metric > kept.challenger_metric
    assert "keeping champion good" in kept.reason

    # the other way round: a weak champion loses to a good challenger
    won = decide(good_dir, manifest, settings=good, champion_version="bad")
    assert won.publish and won.champion_metric < won.challenger_metric
    # ... unless the margin is larger than the gap
    wide = good.model_copy(update={"gate_margin": 1.0})
    assert not decide(good_dir, manifest, settings=wide, champion_version="bad").publish

    # recsys models list / show / promote / rollback
    from recsys.cli import app

    monkeypatch.setenv("MONGODB_URI", mongo_uri)
    monkeypatch.setenv("MONGODB_DB", mongo_db_name)
    monkeypatch.setenv("RECSYS_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("RECSYS_TOP_N", "5")
    runner = CliRunner()
    out = runner.invoke(app, ["models", "list"])
    assert out.exit_code == 0, out.output
    lines = out.output.splitlines()
    assert any(line.startswith("* good") for line in lines)
    assert any(line.strip().startswith("bad") for line in lines)
    shown = runner.invoke(app, ["models", "show", "bad"])
    assert shown.exit_code == 0 and json.loads(shown.stdout)["params"]["factors"] == 1
    assert runner.invoke(app, ["models", "show", "nope"]).exit_code == 1
    # "bad" was never scored: promote must refuse and leave "good" active
    refused = runner.invoke(app, ["models", "promote", "bad"])
    assert refused.exit_code == 1 and "never scored" in refused.output
    score_run_model(bad_dir, manifest, settings=bad)
    promoted = runner.invoke(app, ["models", "promote", "bad"])
    assert promoted.exit_code == 0, promoted.output
    with open_store(good) as store:
        assert store.active_version() == "bad"
    rolled = runner.invoke(app, ["models", "rollback"])
    assert rolled.exit_code == 0 and "active: good" in rolled.output
    assert runner.invoke(app, ["models", "promote", "bad"]).exit_code == 0   # now already ready
    with open_store(good) as store:
        assert store.active_version() == "bad"


def test_champion_gives_unknown_users_no_recommendations(tmp_path: Path, mongo_uri: str,
                                                         mongo_db_name: str) -> None:
    old = write_snapshot(tmp_path, "old", drop_users=10)       # champion never saw u0..u9
    new = write_snapshot(tmp_path, "new")
    settings = settings_for(tmp_path, mongo_uri, mongo_db_name, GOOD)
    champion_dir, _ = train_run_model(old, version="champ", settings=settings)
    data = load_interactions(new.view_path("interactions"))
    train, _ = split_per_user(data.matrix, 0.25, seed=3)
    recs = champion_recommendations(champion_dir, data, train, 3)
    unknown = np.isin(data.user_ids, [f"u{i}" for i in range(10)])
    assert unknown.sum() == 10
    assert np.all(recs[unknown] == -1)
    assert np.all(recs[~unknown] >= 0)
    # never a training item, and in the user's own group (the champion learned the structure)
    assert train[np.arange(data.n_users)[:, None], np.maximum(recs, 0)][~unknown].nnz == 0


def test_gate_recomputes_the_recorded_split(tmp_path: Path, monkeypatch) -> None:
    manifest = write_snapshot(tmp_path, "s1", with_last_ts=True)
    random_split = Settings(data_dir=tmp_path, eval_k=3, holdout_fraction=0.25, **GOOD)
    time_split = random_split.model_copy(update={"holdout_split": "time"})
    random_dir, _ = train_run_model(manifest, version="random", settings=random_split)
    time_dir, timed = train_run_model(manifest, version="time", settings=time_split)
    time_meta = json.loads((time_dir / "metadata.json").read_text())
    assert time_meta["metrics"]["holdout_split"] == "time"

    gate_trains = []
    original = gate.champion_recommendations

    def spy(champion_dir, data, train, k, **kwargs):
        gate_trains.append(train)
        return original(champion_dir, data, train, k, **kwargs)

    monkeypatch.setattr(gate, "champion_recommendations", spy)
    data = load_interactions(manifest.view_path("interactions"), with_last_ts=True)
    # the challenger's recorded split wins over the settings the gate runs with
    decision = decide(time_dir, manifest, settings=random_split, champion_version="random")
    time_train, _, _ = split_per_user_by_time(data.matrix, data.last_ts, 0.25, seed=3)
    assert (gate_trains[-1] != time_train).nnz == 0
    assert decision.challenger_metric == timed.metrics["als"]["ndcg@3"]

    # metrics from before the time split existed have no "holdout_split": they were random
    meta_file = random_dir / "metadata.json"
    meta = json.loads(meta_file.read_text())
    assert meta["metrics"].pop("holdout_split") == "random"
    meta_file.write_text(json.dumps(meta))
    decide(random_dir, manifest, settings=time_split, champion_version="time")
    assert (gate_trains[-1] != split_per_user(data.matrix, 0.25, seed=3)[0]).nnz == 0
    assert (gate_trains[-1] != time_train).nnz > 0


def test_time_split_without_last_ts_names_the_column(tmp_path: Path, monkeypatch) -> None:
    manifest = write_snapshot(tmp_path, "old")                   # an older snapshot: no last_ts
    monkeypatch.setenv("RECSYS_HOLDOUT_SPLIT", "time")
    settings = Settings(data_dir=tmp_path, eval_k=3, **GOOD)
    assert settings.holdout_split == "time"
    with pytest.raises(ModelError, match="'last_ts' column"):
        train_run_model(manifest, version="v1", settings=settings)
