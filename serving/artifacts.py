"""The publish payload of a registered model: its artifacts plus its snapshot's item attributes.

Model files and scores are read through `training.registry` (their owner), item attributes
through `features.snapshot`'s manifest; nothing here writes.
"""

from __future__ import annotations

import dataclasses
import logging
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow.parquet as pq

from features.snapshot import load_manifest
from recsys.errors import NotFound, PublishError, RecsysError
from recsys.settings import Settings
from serving.payload import PublishPayload
from training.registry import load_model, load_scores, model_path

logger = logging.getLogger(__name__)

#: item_features columns denormalised into every listed item of the serving documents
SERVED_ITEM_ATTRIBUTES = ("genres",)


def _dense(factors: Any) -> np.ndarray:
    to_numpy = getattr(factors, "to_numpy", None)  # implicit's GPU arrays
    return np.ascontiguousarray(to_numpy() if to_numpy else factors, dtype=np.float32)


def load_payload(model_dir: Path) -> PublishPayload:
    """The publish payload of a saved and scored model version.

    Raises:
        ModelError: a model file or the scores are missing, unreadable or damaged (the message
            says "never scored" when the version has no scores).
    """
    model, user_ids, item_ids, metadata = load_model(model_dir)
    scores = load_scores(model_dir)
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
        # optional: written by training's score stage when settings.explain_n > 0
        rec_explain_items=scores.get("rec_explain_items"),
        rec_explain_scores=scores.get("rec_explain_scores"),
    )


def item_attributes(
    features_dir: Path, snapshot_id: str, item_ids: np.ndarray,
    columns: tuple[str, ...] = SERVED_ITEM_ATTRIBUTES,
) -> dict[str, list[Any]]:
    """The `columns` of the snapshot's `item_features` view, aligned to `item_ids`.

    Columns the view lacks are skipped; items missing from the view get None.

    Raises:
        PublishError: the manifest or the view file cannot be read.
    """
    try:
        manifest = load_manifest(features_dir, snapshot_id)
        path = manifest.view_path("item_features")
        schema = pq.read_schema(path)
        wanted = [c for c in columns if c in schema.names]
        if not wanted:
            return {}
        table = pq.read_table(path, columns=["item_id", *wanted])
    except (OSError, KeyError, ValueError, RecsysError) as exc:
        raise PublishError(
            f"feature snapshot {snapshot_id!r} in {features_dir}: cannot read item_features "
            f"({exc})"
        ) from exc
    frame = table.to_pandas()
    frame["item_id"] = frame["item_id"].astype(str)
    frame = frame.drop_duplicates("item_id").set_index("item_id")
    aligned = frame.reindex([str(x) for x in np.asarray(item_ids).tolist()])
    out: dict[str, list[Any]] = {}
    for col in wanted:
        values = aligned[col].astype(object).where(aligned[col].notna(), None).tolist()
        out[col] = [v.tolist() if isinstance(v, np.ndarray) else v for v in values]
    return out


def with_item_attributes(payload: PublishPayload, settings: Settings) -> PublishPayload:
    """`payload` plus the item attributes of its feature snapshot (unchanged without one)."""
    snapshot_id = payload.metadata.get("feature_snapshot")
    if not snapshot_id or payload.item_attributes:
        return payload
    attrs = item_attributes(settings.features_dir, str(snapshot_id), payload.item_ids)
    logger.info("denormalising item attributes %s from snapshot %s", sorted(attrs), snapshot_id)
    return dataclasses.replace(payload, item_attributes=attrs)


def payload_for_version(settings: Settings, version: str) -> PublishPayload:
    """The payload of model version `version` from `settings.models_dir`, with item attributes.

    Raises:
        NotFound: there is no such version in the models directory.
        ModelError: the version is incomplete, damaged or was never scored.
        PublishError: its feature snapshot's item_features cannot be read.
    """
    model_dir = model_path(settings.models_dir, version)
    if not model_dir.is_dir():
        raise NotFound(f"model version {version!r} is neither in MongoDB nor in "
                       f"{settings.models_dir}")
    return with_item_attributes(load_payload(model_dir), settings)
