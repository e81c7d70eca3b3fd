"""`/items/...`: similar items and item embeddings."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query, Request, Response

from serving.api import queries
from serving.api.deps import ActiveVersionDep, ServicesDep, active_state, query_options, services
from serving.api.ids import ItemIdPath
from serving.api.lean_route import LeanRoute, json_response
from serving.api.models import EmbeddingPublic, ErrorPublic, SimilarItemsPublic, SimilarQuery

router = APIRouter(prefix="/items", tags=["items"])

_ERRORS = {
    404: {"model": ErrorPublic, "description": "item unknown to the active version"},
    503: {"model": ErrorPublic, "description": "no active version / MongoDB down"},
}


async def get_similar(
    request: Request, item_id: ItemIdPath, query: Annotated[SimilarQuery, Query()]
) -> Response:
    """Top-k by cosine similarity of item factors, the item itself excluded."""
    svc = services(request)
    opts = query_options(query, svc.settings.similar_n)
    return json_response(await queries.similar_items(svc, active_state(svc), item_id, opts))


router.add_api_route(  # a LeanRoute, like user recommendations (serving/api/lean_route.py)
    "/{item_id}/similar", get_similar, methods=["GET"], route_class_override=LeanRoute,
    response_model=SimilarItemsPublic,
    responses=_ERRORS,
    summary="Items most similar to an item",
)


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
