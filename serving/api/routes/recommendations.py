"""`/users/...`: personalised recommendations (popular fallback) and user embeddings."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter

from serving.api import queries
from serving.api.deps import ActiveVersionDep, DbDep, RecKDep
from serving.api.models import EmbeddingPublic, ErrorPublic, UserRecommendationsPublic

router = APIRouter(prefix="/users", tags=["users"])

_UNAVAILABLE = {503: {"model": ErrorPublic, "description": "no active model version yet"}}


@router.get(
    "/{user_id}/recommendations",
    response_model=UserRecommendationsPublic,
    responses=_UNAVAILABLE,
    summary="Top-k recommendations for a user",
)
async def get_recommendations(
    user_id: str, k: RecKDep, db: DbDep, active: ActiveVersionDep
) -> dict[str, Any]:
    """Precomputed top-k; a user unknown to the model gets the popular list (`source="popular"`)."""
    return await queries.user_recommendations(db, active, user_id, k)


@router.get(
    "/{user_id}/embedding",
    response_model=EmbeddingPublic,
    responses={404: {"model": ErrorPublic}, **_UNAVAILABLE},
    summary="A user's latent factors",
)
async def get_user_embedding(user_id: str, db: DbDep, active: ActiveVersionDep) -> dict[str, Any]:
    return await queries.embedding(db, active, "user", user_id)
