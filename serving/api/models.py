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

# Examples for the OpenAPI schema (one per model; nested ones reuse the smaller ones).
_VERSION = "20260105T101500Z-1a2b3c"
_GENERATED = "2026-01-05T10:20:31Z"
_BECAUSE = {"item_id": "i000123", "contribution": 0.41}
_ITEM = {"item_id": "i000042", "score": 0.873, "rank": 1, "genres": ["Comedy", "Drama"],
         "because": [_BECAUSE]}
_USER_RECS = {"total": 50, "offset": 0, "next_offset": 1, "user_id": "u0000001",
              "model_version": _VERSION, "generated_at": _GENERATED,
              "source": "personalized", "items": [_ITEM]}


def _examples(*examples: dict[str, Any]) -> ConfigDict:
    return ConfigDict(json_schema_extra={"examples": list(examples)})


class Because(BaseModel):
    """A past item of the user that contributed to a recommendation."""

    model_config = _examples(_BECAUSE)

    item_id: str
    contribution: float


class RecommendedItem(BaseModel):
    """One listed item. Item attributes materialised at publish time (e.g. `genres`) are
    included as extra fields; `because` only with `explain=true`."""

    model_config = ConfigDict(extra="allow", json_schema_extra={"examples": [_ITEM]})

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

    model_config = _examples(_USER_RECS)

    user_id: str
    model_version: str
    generated_at: datetime | None
    source: Literal["personalized", "popular"]
    items: list[RecommendedItem]


_K_DOC = "items per page, 1..{0}; default min(10, {0})"
_EXCLUDE_DOC = "item ids to leave out (repeat the parameter or separate with commas)"
_GENRE_DOC = "keep items of this genre (shorthand for filter=genres:VALUE)"
_FILTER_DOC = "attribute:value on materialised item attributes, e.g. genres:Comedy; all must match"


def _k(setting: str, variable: str) -> Any:
    return Field(None, ge=1, description=_K_DOC.format(variable),
                 json_schema_extra={SETTING_MAXIMUM: setting})


def _offset(setting: str) -> Any:
    return Field(0, ge=0, description="items to skip (pagination)",
                 json_schema_extra={SETTING_MAXIMUM: setting})


class ListQuery(BaseModel):
    """The query string of a ranked-list endpoint (`Annotated[..., Query()]`: one query
    parameter per field). The bounds that are settings are checked by `deps.build_options`."""

    k: int | None = None
    offset: int = 0
    exclude: list[str] | None = Field(None, description=_EXCLUDE_DOC)
    genre: list[str] | None = Field(None, description=_GENRE_DOC)
    filter: list[FilterSpec] | None = Field(None, description=_FILTER_DOC)


class RecQuery(ListQuery):
    """`GET /users/{user_id}/recommendations` options."""

    k: int | None = _k("top_n", "RECSYS_TOP_N")
    offset: int = _offset("top_n")
    explain: bool = Field(False, description="add `because` to each item")


class SimilarQuery(ListQuery):
    """`GET /items/{item_id}/similar` options."""

    k: int | None = _k("similar_n", "RECSYS_SIMILAR_N")
    offset: int = _offset("similar_n")


class BatchRecommendationsRequest(BaseModel):
    """`POST /recommendations/batch`: the same options as the GET endpoint, in the body."""

    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [
        {"user_ids": ["u0000001", "u0000002"], "k": 5, "genre": ["Comedy"], "explain": True}]})

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
    """Each requested user's list, in the order of `user_ids`."""

    model_config = _examples({"model_version": _VERSION, "generated_at": _GENERATED,
                              "results": [_USER_RECS]})

    model_version: str
    generated_at: datetime | None
    results: list[UserRecommendationsPublic]


class SimilarItemsPublic(_Page):
    """Items most similar to `item_id` (itself excluded); `source` is always "similar"."""

    model_config = _examples({"total": 20, "offset": 0, "next_offset": 1,
                              "item_id": "i000042", "model_version": _VERSION,
                              "generated_at": _GENERATED, "source": "similar",
                              "items": [{"item_id": "i000007", "score": 0.91, "rank": 1,
                                         "genres": ["Comedy"]}]})

    item_id: str
    model_version: str
    generated_at: datetime | None
    source: Literal["similar"] = "similar"
    items: list[RecommendedItem]


class EmbeddingPublic(BaseModel):
    """A user's or item's latent factors (float32 values as JSON numbers)."""

    model_config = _examples({"id": "u0000001", "model_version": _VERSION, "dim": 4,
                              "vector": [0.125, -0.5, 0.0625, 0.75]})

    id: str
    model_version: str
    dim: int
    vector: list[float]


class HealthPublic(BaseModel):
    """The process is up."""

    model_config = _examples({"status": "ok"})

    status: Literal["ok"] = "ok"


class ReadyPublic(BaseModel):
    """MongoDB answers and this version is served."""

    model_config = _examples({"status": "ready", "model_version": _VERSION,
                              "generated_at": _GENERATED, "switched_at": "2026-01-05T10:24:02Z"})

    status: Literal["ready"] = "ready"
    model_version: str
    generated_at: datetime | None = None
    switched_at: datetime | None = None


class ActivateRequest(BaseModel):
    """The version to serve."""

    model_config = ConfigDict(extra="forbid",
                              json_schema_extra={"examples": [{"version": _VERSION}]})

    version: ModelVersion


class ActivatePublic(BaseModel):
    """The version now served and the one it replaced (null when it was already served)."""

    model_config = _examples({"active_version": _VERSION,
                              "previous_version": "20251229T101500Z-9f8e7d"})

    active_version: str
    previous_version: str | None


class VersionPublic(BaseModel):
    """A published model version as MongoDB holds it."""

    model_config = _examples({
        "version": _VERSION, "status": "ready", "active": True,
        "created_at": "2026-01-05T10:21:00Z", "ready_at": "2026-01-05T10:23:58Z",
        "generated_at": _GENERATED,
        "counts": {"users": 2000, "items": 1000, "recs": 2000, "similar": 1000, "popular": 1,
                   "factors": 3000}})

    version: str
    status: str = Field(description='"building" while written (or left so by a crash), '
                                    '"ready", "dropping" while pruned, "abandoned" for a day '
                                    "once a later publish cleaned an unfinished one up")
    active: bool
    created_at: datetime | None = None
    ready_at: datetime | None = None
    generated_at: datetime | None = None
    counts: dict[str, int] = Field(default_factory=dict)


class ErrorPublic(BaseModel):
    """Every error answer (422 lists `{type, loc, msg}` objects instead of a string)."""

    model_config = _examples({"detail": "unknown item 'i999999' in version " + _VERSION})

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


_ERROR_EXAMPLE = {
    400: "There was an error parsing the body",
    401: "missing X-API-Key header",
    403: "this API key has no admin rights",
    404: "unknown item 'i999999' in version " + _VERSION,
    409: "another publish holds the lock",
    413: "request body larger than 262144 bytes",
    429: "rate limit exceeded",
    503: "MongoDB is unavailable",
}


def error_responses(*codes: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI `responses` for these error statuses (every error body is `ErrorPublic`)."""
    return {code: {"model": ErrorPublic, "description": _ERROR_MEANING[code],
                   "content": {"application/json": {"example": {"detail": _ERROR_EXAMPLE[code]}}}}
            for code in codes}
