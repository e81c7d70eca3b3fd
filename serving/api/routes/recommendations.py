"""`/users/...` and `/recommendations/batch`: personalised lists (popular fallback), embeddings."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query, Request, Response
from fastapi.exceptions import RequestValidationError

from serving.api import queries
from serving.api.deps import (
    ActiveVersionDep,
    ServicesDep,
    active_state,
    build_options,
    query_options,
    services,
)
from serving.api.ids import UserIdPath
from serving.api.lean_route import LeanRoute, json_response
from serving.api.models import (
    BatchRecommendationsPublic,
    BatchRecommendationsRequest,
    EmbeddingPublic,
    ErrorPublic,
    RecQuery,
    UserRecommendationsPublic,
    error_responses,
)

router = APIRouter(tags=["users"])

_UNAVAILABLE = {503: {"model": ErrorPublic, "description": "no active version / MongoDB down"}}


async def get_recommendations(
    request: Request, user_id: UserIdPath, query: Annotated[RecQuery, Query()]
) -> Response:
    """Precomputed top-k; a user unknown to the model gets the popular list (`source="popular"`).

    `exclude`, `genre`/`filter` and `offset` cut the stored list (at most RECSYS_TOP_N items).
    """
    svc = services(request)
    opts = query_options(query, svc.settings.top_n)
    answer = await queries.user_recommendations(svc, active_state(svc), user_id, opts)
    return json_response(answer)


# the hottest endpoint: a LeanRoute (see serving/api/lean_route.py)
router.add_api_route(
    "/users/{user_id}/recommendations", get_recommendations, methods=["GET"],
    route_class_override=LeanRoute,
    response_model=UserRecommendationsPublic,
    responses=_UNAVAILABLE,
    summary="Top-k recommendations for a user",
)


@router.post(
    "/recommendations/batch",
    response_model=BatchRecommendationsPublic,
    responses={**error_responses(400, 413), **_UNAVAILABLE},
    summary="Recommendations for up to RECSYS_API_BATCH_MAX_USERS users in one call",
)
async def post_batch(
    body: BatchRecommendationsRequest, svc: ServicesDep, active: ActiveVersionDep
) -> Response:
    """One `$in` read for the users not in the cache; results in the order of `user_ids`."""
    limit = svc.settings.api_batch_max_users
    if len(body.user_ids) > limit:
        raise RequestValidationError([{
            "type": "too_long", "loc": ("body", "user_ids"), "input": len(body.user_ids),
            "msg": f"at most {limit} user ids per batch",
        }])
    opts = build_options(k=body.k, limit=svc.settings.top_n, offset=body.offset,
                         exclude=body.exclude, genre=body.genre, filters=body.filter,
                         explain=body.explain, where="body")
    # encoded as is: validating up to 1,000 lists against the response model again cost more
    # than reading them
    return json_response(await queries.batch_recommendations(svc, active, body.user_ids, opts))


@router.get(
    "/users/{user_id}/embedding",
    response_model=EmbeddingPublic,
    responses={**error_responses(404), **_UNAVAILABLE},
    summary="A user's latent factors",
)
async def get_user_embedding(
    user_id: UserIdPath, svc: ServicesDep, active: ActiveVersionDep
) -> dict[str, Any]:
    """The user's latent factors in the active version (float32 values as JSON numbers); a
    user's score for an item is the dot product with the item's embedding. 404 when the active
    version does not know the user."""
    return await queries.embedding(svc, active, "user", user_id)
