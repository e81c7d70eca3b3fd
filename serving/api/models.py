"""Public request and response models of the serving API."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from serving.api.ids import EntityId, ModelVersion
from serving.api.openapi import SETTING_MAX_ITEMS, SETTING_MAXIMUM

FILTER_PATTERN = r"^[^:]+:.+$"
"""`attribute:value` (the value may contain ':'), as checked by `deps.build_options`."""
FilterSpec = Annotated[str, Field(json_schema_extra={"pattern": FILTER_PATTERN})]


class Because(BaseModel):
    """A past item of the user that contributed to a recommendation."""

    item_id: str
    contribution: float


class RecommendedItem(BaseModel):
    """One listed item. Item attributes materialised at publish time (e.g. `genres`) are
    included as extra fields; `because` only with `explain=true`."""

    model_config = ConfigDict(extra="allow")

    item_id: str
    score: float
    rank: int = Field(ge=1, description="1 = best, in the stored (unfiltered) list")
    because: list[Because] | None = Field(
        None, description="explanations (only with explain=true on versions that have them)"
    )


class _Page(BaseModel):
    total: int = Field(description="items available after exclude/filters")
    offset: int
    next_offset: int | None = Field(description="offset of the next page; null on the last")


class UserRecommendationsPublic(_Page):
    """Top-k items for a user; `source` is "popular" when the user is unknown to the model."""

    user_id: str
    model_version: str
    generated_at: datetime | None
    source: Literal["personalized", "popular"]
    items: list[RecommendedItem]


class BatchRecommendationsRequest(BaseModel):
    """`POST /recommendations/batch`: the same options as the GET endpoint, in the body."""

    model_config = ConfigDict(extra="forbid")

    user_ids: list[EntityId] = Field(
        min_length=1, description="up to RECSYS_API_BATCH_MAX_USERS ids",
        json_schema_extra={SETTING_MAX_ITEMS: "api_batch_max_users"})
    k: int | None = Field(None, ge=1, description="items per user, 1..RECSYS_TOP_N",
                          json_schema_extra={SETTING_MAXIMUM: "top_n"})
    offset: int = Field(0, ge=0, json_schema_extra={SETTING_MAXIMUM: "top_n"})
    exclude: list[EntityId] | None = None
    genre: list[str] | None = None
    filter: list[FilterSpec] | None = None
    explain: bool = False


class BatchRecommendationsPublic(BaseModel):
    model_version: str
    generated_at: datetime | None
    results: list[UserRecommendationsPublic]


class SimilarItemsPublic(_Page):
    """Items most similar to `item_id` (itself excluded); `source` is always "similar"."""

    item_id: str
    model_version: str
    generated_at: datetime | None
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


class ActivateRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    version: ModelVersion


class ActivatePublic(BaseModel):
    active_version: str
    previous_version: str | None


class VersionPublic(BaseModel):
    version: str
    status: str
    active: bool
    created_at: datetime | None = None
    ready_at: datetime | None = None
    generated_at: datetime | None = None
    counts: dict[str, int] = Field(default_factory=dict)


class ErrorPublic(BaseModel):
    detail: str


_ERROR_MEANING = {
    400: "malformed request (the body cannot be parsed)",
    401: "missing or unknown X-API-Key (when RECSYS_API_KEYS is set; admin: always)",
    403: "a valid key without admin rights, or admin endpoints are disabled",
    404: "unknown to the active version",
    409: "the version cannot be served now (not ready, or another publish holds the lock)",
    413: "request body larger than RECSYS_API_MAX_BODY_BYTES",
    429: "rate limit (per API key) or too many failed authentications from this address; "
         "see Retry-After",
    503: "no active version, or MongoDB unreachable or too slow; see Retry-After",
}


def error_responses(*codes: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI `responses` for these error statuses (every error body is `ErrorPublic`)."""
    return {code: {"model": ErrorPublic, "description": _ERROR_MEANING[code]} for code in codes}
