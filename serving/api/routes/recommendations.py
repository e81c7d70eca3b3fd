"""`/users/...` and `/recommendations/batch`: personalised lists (popular fallback), embeddings."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from fastapi.exceptions import RequestValidationError

from serving.api import queries
from serving.api.deps import ActiveVersionDep, RecOptionsDep, ServicesDep, build_options
from serving.api.ids import UserIdPath
from serving.api.models import (
    BatchRecommendationsPublic,
    BatchRecommendationsRequest,
    EmbeddingPublic,
    ErrorPublic,
    UserRecommendationsPublic,
    error_responses,
)

router = APIRouter(tags=["users"])

_UNAVAILABLE = {503: {"model": ErrorPublic, "description": "no active version / MongoDB down"}}


@router.get(
    "/users/{user_id}/recommendations",
    response_model=UserRecommendationsPublic,
    response_model_exclude_unset=True,
    responses=_UNAVAILABLE,
    summary="Top-k recommendations for a user",
)
async def get_recommendations(
    user_id: UserIdPath, opts: RecOptionsDep, svc: ServicesDep, active: ActiveVersionDep
) -> dict[str, Any]:
    """Precomputed top-k; a user unknown to the model gets the popular list (`source="popular"`).

    `exclude`, `genre`/`filter` and `offset` cut the stored list (at most RECSYS_TOP_N items).
    """
    return await queries.user_recommendations(svc, active, user_id, opts)


@router.post(
    "/recommendations/batch",
    response_model=BatchRecommendationsPublic,
    response_model_exclude_unset=True,
    responses={**error_responses(400, 413), **_UNAVAILABLE},
    summary="Recommendations for up to RECSYS_API_BATCH_MAX_USERS users in one call",
)
async def post_batch(
    body: BatchRecommendationsRequest, svc: ServicesDep, active: ActiveVersionDep
) -> dict[str, Any]:
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
    return await queries.batch_recommendations(svc, active, body.user_ids, opts)


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
