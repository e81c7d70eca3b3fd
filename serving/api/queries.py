"""The API's reads: each is a single `find_one` by `_id` on the active version's collections."""

from __future__ import annotations

from typing import Any

from pymongo.asynchronous.database import AsyncDatabase

from recsys.errors import NotFound
from serving.api.active import ActiveState
from serving.store import (
    decode_vector,
    item_embeddings_collection,
    recs_collection,
    similar_collection,
    user_embeddings_collection,
)

_RANKED_PROJECTION = ("model_version", "generated_at")


def _ranked_projection(k: int) -> dict[str, Any]:
    return {"items": {"$slice": k}, **{f: 1 for f in _RANKED_PROJECTION}}


async def user_recommendations(
    db: AsyncDatabase, active: ActiveState, user_id: str, k: int
) -> dict[str, Any]:
    """Top-k for a known user; the cached popular list (no extra read) for an unknown one."""
    doc = await db[recs_collection(active.version)].find_one(
        {"_id": user_id}, _ranked_projection(k)
    )
    if doc is not None:
        return {
            "user_id": user_id,
            "model_version": doc.get("model_version", active.version),
            "generated_at": doc.get("generated_at", active.generated_at),
            "source": "personalized",
            "items": doc.get("items", []),
        }
    return {
        "user_id": user_id,
        "model_version": active.version,
        "generated_at": active.generated_at,
        "source": "popular",
        "items": active.popular[:k],
    }


async def similar_items(
    db: AsyncDatabase, active: ActiveState, item_id: str, k: int
) -> dict[str, Any]:
    doc = await db[similar_collection(active.version)].find_one(
        {"_id": item_id}, _ranked_projection(k)
    )
    if doc is None:
        raise NotFound(f"item {item_id!r} is unknown to model version {active.version}")
    return {
        "item_id": item_id,
        "model_version": doc.get("model_version", active.version),
        "generated_at": doc.get("generated_at", active.generated_at),
        "source": "similar",
        "items": doc.get("items", []),
    }


async def embedding(
    db: AsyncDatabase, active: ActiveState, kind: str, entity_id: str
) -> dict[str, Any]:
    """`kind` is "user" or "item"."""
    name = (user_embeddings_collection if kind == "user" else item_embeddings_collection)(
        active.version
    )
    doc = await db[name].find_one({"_id": entity_id})
    if doc is None:
        raise NotFound(f"{kind} {entity_id!r} is unknown to model version {active.version}")
    return {
        "id": entity_id,
        "model_version": doc.get("model_version", active.version),
        "dim": doc["dim"],
        "vector": decode_vector(doc["vector"]),
    }
