"""What a publish reads of a registered model: its artifacts plus its snapshot's item attributes.

Model files and scores are read through `training.registry` (their owner), item attributes
through `features.snapshot`'s manifest; nothing here writes. A partitioned publish reads the
item side once (`load_item_side`) and each user partition in its own part
(`load_user_part`), partition p being the users of the scores' part p (the same
`recsys.partitions.partition_of` split the scoring used); `load_payload` reads everything at
once (tests, benchmarks, the training gate).
"""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow.parquet as pq

from features.snapshot import load_manifest
from recsys.errors import NotFound, PublishError, RecsysError
from recsys.partitions import partition_of
from recsys.settings import Settings
from serving.payload import PublishPayload
from training.registry import (
    load_item_scores,
    load_model,
    load_score_part,
    load_scores,
    model_path,
    score_partitions,
)

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
    return with_item_attributes(load_payload(version_dir(settings.models_dir, version)),
                                settings)


@dataclass(frozen=True, eq=False)
class ItemSide:
    """The item side of a model version, read once per publish.

    Attributes:
        metadata: the model's metadata.json.
        user_count: the model's users (all partitions).
        item_ids: (n_items,) str ids.
        similar_items, similar_scores, popular_items, popular_scores: the item scores.
        item_factors: (n_items, f) float32.
        attributes: the snapshot's item attributes aligned to item_ids ({} without a snapshot).
        partitions: user partitions of the version's scores.
    """

    metadata: dict[str, Any]
    user_count: int
    item_ids: np.ndarray
    similar_items: np.ndarray
    similar_scores: np.ndarray
    popular_items: np.ndarray
    popular_scores: np.ndarray
    item_factors: np.ndarray
    attributes: dict[str, list[Any]]
    partitions: int


@dataclass(frozen=True, eq=False)
class UserPart:
    """The users of one partition of a model version, with their scores and embeddings.

    Attributes:
        user_ids: the partition's users (ascending model order).
        item_ids: every item of the model.
        rec_items, rec_scores: (rows, N) lists; rec_explain_* (rows, N, E) or None.
        user_factors: (rows, f) float32.
        attributes: the snapshot's item attributes aligned to item_ids.
    """

    user_ids: np.ndarray
    item_ids: np.ndarray
    rec_items: np.ndarray
    rec_scores: np.ndarray
    rec_explain_items: np.ndarray | None
    rec_explain_scores: np.ndarray | None
    user_factors: np.ndarray
    attributes: dict[str, list[Any]]


def _snapshot_attributes(features_dir: Path, metadata: dict[str, Any], item_ids: np.ndarray
                         ) -> dict[str, list[Any]]:
    snapshot_id = metadata.get("feature_snapshot")
    return item_attributes(features_dir, str(snapshot_id), item_ids) if snapshot_id else {}


def version_dir(models_dir: Path, version: str) -> Path:
    """The registry directory of `version`.

    Raises:
        NotFound: there is no such version in the models directory.
    """
    model_dir = model_path(models_dir, version)
    if not model_dir.is_dir():
        raise NotFound(f"model version {version!r} is neither in MongoDB nor in {models_dir}")
    return model_dir


def load_item_side(model_dir: Path, features_dir: Path) -> ItemSide:
    """The item side of the saved and scored version in `model_dir`.

    Raises:
        ModelError: a model file or the scores are missing, unreadable or damaged.
        PublishError: its feature snapshot's item_features cannot be read.
    """
    model, user_ids, item_ids, metadata = load_model(model_dir)
    scores = load_item_scores(model_dir)
    return ItemSide(
        metadata=metadata, user_count=len(user_ids), item_ids=item_ids,
        similar_items=scores["similar_items"], similar_scores=scores["similar_scores"],
        popular_items=scores["popular_items"], popular_scores=scores["popular_scores"],
        item_factors=_dense(model.item_factors),
        attributes=_snapshot_attributes(features_dir, metadata, item_ids),
        partitions=score_partitions(model_dir))


def load_user_part(model_dir: Path, features_dir: Path, part: int, partitions: int
                   ) -> UserPart:
    """Partition `part` (of `partitions`) of the version in `model_dir`.

    Raises:
        ModelError: a model file or the scores part is missing, unreadable or damaged.
        PublishError: the scores part holds users of another partition, or the snapshot's
            item_features cannot be read.
    """
    model, user_ids, item_ids, metadata = load_model(model_dir)
    scores = load_score_part(model_dir, part)
    rows = np.asarray(scores["user_index"], dtype=np.int64)
    users = user_ids[rows]
    if len(users) and np.any(partition_of(users, partitions) != part):
        raise PublishError(f"model version {model_dir.name!r}: scores part {part} of "
                           f"{partitions} holds users of other partitions")
    return UserPart(
        user_ids=users, item_ids=item_ids, rec_items=scores["rec_items"],
        rec_scores=scores["rec_scores"], rec_explain_items=scores.get("rec_explain_items"),
        rec_explain_scores=scores.get("rec_explain_scores"),
        user_factors=_dense(model.user_factors)[rows],
        attributes=_snapshot_attributes(features_dir, metadata, item_ids))
