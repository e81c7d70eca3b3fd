"""Public response models of the serving API."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel, Field


class RecommendedItem(BaseModel):
    item_id: str
    score: float
    rank: int = Field(ge=1, description="1 = best")


class UserRecommendationsPublic(BaseModel):
    """Top-k items for a user; `source` is "popular" when the user is unknown to the model."""

    user_id: str
    model_version: str
    generated_at: datetime
    source: Literal["personalized", "popular"]
    items: list[RecommendedItem]


class SimilarItemsPublic(BaseModel):
    """Items most similar to `item_id` (itself excluded); `source` is always "similar"."""

    item_id: str
    model_version: str
    generated_at: datetime
    source: Literal["similar"] = "similar"
    items: list[RecommendedItem]


class EmbeddingPublic(BaseModel):
    """A user's or item's latent factors (float32 values as JSON numbers)."""

    id: str
    model_version: str
    dim: int
    vector: list[float]


class HealthPublic(BaseModel):
    status: Literal["ok"] = "ok"


class ReadyPublic(BaseModel):
    status: Literal["ready"] = "ready"
    model_version: str
    generated_at: datetime | None = None
    switched_at: datetime | None = None


class ErrorPublic(BaseModel):
    detail: str
