"""The pipeline's publish stage as one plain function (the flow wraps it in a task)."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from recsys.settings import Settings
from serving.payload import PublishPayload
from serving.store import open_store
from training.registry import load_model


def _dense(factors: Any) -> np.ndarray:
    to_numpy = getattr(factors, "to_numpy", None)  # implicit's GPU arrays
    return np.ascontiguousarray(to_numpy() if to_numpy else factors, dtype=np.float32)


def load_payload(model_dir: Path, scores_file: Path) -> PublishPayload:
    """The publish payload of a saved model and its scores."""
    model, user_ids, item_ids, metadata = load_model(model_dir)
    with np.load(scores_file) as scores:
        return PublishPayload(
            version=model_dir.name,
            generated_at=datetime.now(UTC),
            user_ids=user_ids,
            item_ids=item_ids,
            rec_items=scores["rec_items"],
            rec_scores=scores["rec_scores"],
            similar_items=scores["similar_items"],
            similar_scores=scores["similar_scores"],
            user_factors=_dense(model.user_factors),
            item_factors=_dense(model.item_factors),
            popular_items=scores["popular_items"],
            popular_scores=scores["popular_scores"],
            metadata=metadata,
        )


def publish_run(model_dir: Path, scores_file: Path, *, settings: Settings) -> dict[str, Any]:
    """Write a new version, verify it, switch the active pointer to it, prune old versions.

    Any failure before `activate` leaves the previous version serving; the partial version is
    cleaned up at the start of the next publish.
    """
    payload = load_payload(model_dir, scores_file)
    with open_store(settings) as store:
        store.cleanup_incomplete()
        summary = store.publish(payload, batch_size=settings.publish_batch_size)
        previous = store.activate(payload.version)
        dropped = store.prune(settings.keep_versions)
    return {**summary, "active_version": payload.version, "previous_version": previous,
            "dropped_versions": dropped}
