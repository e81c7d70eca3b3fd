"""The champion/challenger gate with the champion passed in by its caller: no MongoDB needed."""

from __future__ import annotations

from pathlib import Path

from recsys.settings import Settings
from tests.training.test_stage_gate import BAD, GOOD, write_snapshot
from training.gate import decide
from training.stage import train_run_model


def test_gate_decides_on_the_champion_it_is_given(tmp_path: Path) -> None:
    manifest = write_snapshot(tmp_path, "s1")
    # an unreachable MongoDB: the gate must never try to read it
    good = Settings(data_dir=tmp_path, eval_k=3, holdout_fraction=0.25,
                    mongodb_uri="mongodb://127.0.0.1:1", mongodb_timeout_ms=100, **GOOD)
    bad = good.model_copy(update=BAD)
    good_dir, _ = train_run_model(manifest, version="good", settings=good)
    bad_dir, _ = train_run_model(manifest, version="bad", settings=bad)

    first = decide(good_dir, manifest, champion_version=None, settings=good)
    assert first.publish and first.champion_version is None and "no active" in first.reason

    kept = decide(bad_dir, manifest, champion_version="good", settings=bad)
    assert not kept.publish and kept.champion_version == "good"
    assert kept.champion_metric > kept.challenger_metric
    assert "keeping champion good" in kept.reason

    won = decide(good_dir, manifest, champion_version="bad", settings=good)
    assert won.publish and won.champion_metric < won.challenger_metric

    same = decide(good_dir, manifest, champion_version="good", settings=good)
    assert same.publish and "already active" in same.reason

    # a champion whose files are gone or broken cannot be compared: publish, and say why
    gone = decide(good_dir, manifest, champion_version="pruned", settings=good)
    assert gone.publish and "no usable model files" in gone.reason
    (bad_dir / "model.npz").unlink()
    broken = decide(good_dir, manifest, champion_version="bad", settings=good)
    assert broken.publish and broken.champion_metric is None
    assert "active version bad has no usable model files" in broken.reason
