"""Scoring by user partitions (issue 15): any partition count, any part order, any process gives
the same scores as one partition; a retried part rewrites the same file."""

from __future__ import annotations

import json
import multiprocessing
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from recsys.errors import ModelError
from recsys.partitions import partition_of, serial_map
from recsys.settings import Settings
from tests.training.helpers import GOOD, write_snapshot
from training.registry import load_model, verify_model
from training.scores import (
    ITEMS_PART,
    load_item_scores,
    load_score_part,
    load_scores,
    score_partitions,
    user_part_name,
)
from training.scoring import release_scoring_inputs, score_part
from training.stage import score_run_model, train_run_model


def reversed_map(label: str, fn: Callable[..., Any], args_list: Sequence[tuple[Any, ...]]
                 ) -> list[Any]:
    """A mapper that runs the parts last to first (as a cluster may finish them)."""
    return [fn(*args) for args in reversed(args_list)][::-1]


def pool_map(label: str, fn: Callable[..., Any], args_list: Sequence[tuple[Any, ...]]
             ) -> list[Any]:
    """A mapper that runs every part in fresh worker processes (nothing cached from here)."""
    with ProcessPoolExecutor(2, mp_context=multiprocessing.get_context("spawn")) as pool:
        return list(pool.map(fn, *zip(*args_list, strict=True)))


@pytest.fixture
def trained(tmp_path: Path) -> tuple[Path, Any, Settings]:
    manifest = write_snapshot(tmp_path, "s1")
    # 16 factors: enough for BLAS to score a user differently in the last bit depending on
    # the batch it is in, which `recommend_top_n` must not let through
    settings = Settings(data_dir=tmp_path, top_n=5, similar_n=4, explain_n=2,
                        **{**GOOD, "factors": 16})
    model_dir, _ = train_run_model(manifest, version="v1", settings=settings)
    return model_dir, manifest, settings


def _scores_with(model_dir: Path, manifest: Any, settings: Settings, partitions: int,
                 mapper: Any = serial_map) -> dict[str, np.ndarray]:
    score_run_model(model_dir, manifest, settings=settings.model_copy(
        update={"partitions": partitions}), mapper=mapper)
    verify_model(model_dir, scores=True)
    assert score_partitions(model_dir) == partitions
    return load_scores(model_dir)


def test_partitions_in_any_order_and_process_give_the_same_scores(trained) -> None:
    model_dir, manifest, settings = trained
    single = _scores_with(model_dir, manifest, settings, 1)
    assert set(single) == {"rec_items", "rec_scores", "rec_explain_items", "rec_explain_scores",
                           "similar_items", "similar_scores", "popular_items", "popular_scores"}
    assert single["rec_explain_items"].shape == (80, 5, 2)
    for partitions, mapper in ((3, reversed_map), (4, pool_map)):
        split = _scores_with(model_dir, manifest, settings, partitions, mapper)
        for key, expected in single.items():
            np.testing.assert_array_equal(split[key], expected, err_msg=f"{key}, {partitions}")

    # part p holds exactly the users that partition_of puts there, in ascending order
    _, user_ids, _, _ = load_model(model_dir)
    expected_part = partition_of(user_ids, 4)
    for part in range(4):
        index = load_score_part(model_dir, part)["user_index"]
        assert np.all(np.diff(index) > 0)
        np.testing.assert_array_equal(index, np.flatnonzero(expected_part == part))
    assert load_item_scores(model_dir)["similar_items"].shape == (20, 4)


def test_a_retried_part_rewrites_the_same_file(trained) -> None:
    model_dir, manifest, settings = trained
    _scores_with(model_dir, manifest, settings, 2)
    metadata = json.loads((model_dir / "metadata.json").read_text())
    for part in (0, 2):  # a user part and the items part, as a retried task runs them
        name = user_part_name(part, 2) if part < 2 else ITEMS_PART
        before = (model_dir / name).read_bytes()
        release_scoring_inputs()  # a fresh worker: loads the model again
        again = score_part(str(model_dir), part, 2, settings.top_n, settings.explain_n,
                           settings.similar_n, settings.popular_n)
        assert again[0] == name and again[1] == metadata["checksums"][name]
        assert (model_dir / name).read_bytes() == before
    verify_model(model_dir, scores=True)   # still the committed scores


def test_a_failed_part_leaves_the_version_unscored(trained) -> None:
    model_dir, manifest, settings = trained
    _scores_with(model_dir, manifest, settings, 1)

    def failing_map(label: str, fn: Callable[..., Any], args_list: Sequence[tuple[Any, ...]]
                    ) -> list[Any]:
        fn(*args_list[0])
        raise ModelError("worker lost")

    with pytest.raises(ModelError, match="worker lost"):
        score_run_model(model_dir, manifest, settings=settings.model_copy(
            update={"partitions": 2}), mapper=failing_map)
    with pytest.raises(ModelError, match="never scored"):
        load_scores(model_dir)
    verify_model(model_dir)


def test_scoring_refuses_another_snapshot(tmp_path: Path, trained) -> None:
    model_dir, _, settings = trained
    other = write_snapshot(tmp_path / "other", "s2")
    with pytest.raises(ModelError, match="trained on feature snapshot s1, not s2"):
        score_run_model(model_dir, other, settings=settings)
