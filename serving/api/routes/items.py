"""`/items/...`: similar items and item embeddings."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter

from serving.api import queries
from serving.api.deps import ActiveVersionDep, DbDep, SimilarKDep
from serving.api.models import EmbeddingPublic, ErrorPublic, SimilarItemsPublic

router = APIRouter(prefix="/items", tags=["items"])

_ERRORS = {
    404: {"model": ErrorPublic, "description": "item unknown to the active version"},
    503: {"model": ErrorPublic, "description": "no active model version yet"},
}


@router.get(
    "/{item_id}/similar",
    response_model=SimilarItemsPublic,
    responses=_ERRORS,
    summary="Items most similar to an item",
)
async def get_similar(
    item_id: str, k: SimilarKDep, db: DbDep, active: ActiveVersionDep
) -> dict[str, Any]:
    """Top-k by cosine similarity of item factors, the item itself excluded."""
    return await queries.similar_items(db, active, item_id, k)


@router.get(
    "/{item_id}/embedding",
    response_model=EmbeddingPublic,
    responses=_ERRORS,
    summary="An item's latent factors",
)
async def get_item_embedding(item_id: str, db: DbDep, active: ActiveVersionDep) -> dict[str, Any]:
    return await queries.embedding(db, active, "item", item_id)
