"""`/items/...`: similar items and item embeddings."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter

from serving.api import queries
from serving.api.deps import ActiveVersionDep, ServicesDep, SimilarOptionsDep
from serving.api.ids import ItemIdPath
from serving.api.models import EmbeddingPublic, ErrorPublic, SimilarItemsPublic

router = APIRouter(prefix="/items", tags=["items"])

_ERRORS = {
    404: {"model": ErrorPublic, "description": "item unknown to the active version"},
    503: {"model": ErrorPublic, "description": "no active version / MongoDB down"},
}


@router.get(
    "/{item_id}/similar",
    response_model=SimilarItemsPublic,
    response_model_exclude_unset=True,
    responses=_ERRORS,
    summary="Items most similar to an item",
)
async def get_similar(
    item_id: ItemIdPath, opts: SimilarOptionsDep, svc: ServicesDep, active: ActiveVersionDep
) -> dict[str, Any]:
    """Top-k by cosine similarity of item factors, the item itself excluded."""
    return await queries.similar_items(svc, active, item_id, opts)


@router.get(
    "/{item_id}/embedding",
    response_model=EmbeddingPublic,
    responses=_ERRORS,
    summary="An item's latent factors",
)
async def get_item_embedding(
    item_id: ItemIdPath, svc: ServicesDep, active: ActiveVersionDep
) -> dict[str, Any]:
    """The item's latent factors in the active version (float32 values as JSON numbers), e.g.
    for nearest-neighbour search elsewhere. 404 when the active version does not know it."""
    return await queries.embedding(svc, active, "item", item_id)
