"""Response models of the catalogue (`/items`) and stats (`/stats/...`) endpoints."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

_AT = "2024-05-01T12:00:00Z"


def _examples(*examples: dict[str, Any]) -> ConfigDict:
    return ConfigDict(json_schema_extra={"examples": list(examples)})


_ITEM = {"item_id": "i42", "title": "Heat (1995)", "genres": ["Action", "Crime"],
         "attributes": {"release_year": 1995}, "n_interactions": 211, "n_users": 198,
         "popularity_rank": 12, "in_model": True}


class CatalogueItemPublic(BaseModel):
    """One catalogue item as the online feature store has it."""

    model_config = _examples(_ITEM)

    item_id: str
    title: str | None = Field(None, description="null when the catalogue has no titles")
    genres: list[str] = Field(default_factory=list)
    attributes: dict[str, Any] = Field(
        default_factory=dict, description="the item's other catalogue attributes")
    n_interactions: int | None = Field(None, description="events at the snapshot's as-of")
    n_users: int | None = Field(None, description="distinct users (popularity)")
    popularity_rank: int | None = Field(None, description="rank by n_users, 1 = top")
    in_model: bool = Field(description="the active model version knows the item (it can be "
                                       "recommended and has similar items)")


class ItemsPagePublic(BaseModel):
    """A page of the catalogue, in item-id order. Empty with `snapshot_id` null while no
    feature snapshot is online."""

    model_config = _examples({
        "model_version": "20240501T120000Z-3f9c", "snapshot_id": "s-20240501",
        "as_of": _AT, "total": 1682, "offset": 0, "next_offset": 1, "items": [_ITEM]})

    model_version: str
    snapshot_id: str | None = Field(description="the online feature snapshot read")
    as_of: datetime | None = Field(description="the snapshot's as-of time")
    total: int = Field(description="items matching the filters")
    offset: int
    next_offset: int | None = Field(description="offset of the next page; null on the last")
    items: list[CatalogueItemPublic]


class ItemDetailPublic(BaseModel):
    """An item's catalogue attributes and its online features."""

    model_config = _examples({
        **{k: v for k, v in _ITEM.items() if k not in ("n_interactions", "n_users",
                                                       "popularity_rank")},
        "model_version": "20240501T120000Z-3f9c", "snapshot_id": "s-20240501", "as_of": _AT,
        "features": {"n_interactions": 211, "n_users": 198, "n_recent_users": 14,
                     "mean_rating": 3.91, "popularity_rank": 12, "trending_rank": 40,
                     "first_ts": "1997-09-20T03:05:10Z", "last_ts": "1998-04-22T23:10:38Z"}})

    item_id: str
    model_version: str
    snapshot_id: str
    as_of: datetime | None
    title: str | None = None
    genres: list[str] = Field(default_factory=list)
    attributes: dict[str, Any] = Field(default_factory=dict)
    features: dict[str, Any] = Field(
        description="the item_features view's columns (see `recsys features list`)")
    in_model: bool


class CoveragePublic(BaseModel):
    """How much of the catalogue the stored recommendation lists reach."""

    model_config = _examples({"catalogue_items": 1682, "catalogue": "online features",
                              "recommended_items": 871, "share": 0.5178, "lists": 943,
                              "slots": 47150})

    catalogue_items: int
    catalogue: str = Field(description='"online features" (the online snapshot\'s items) or '
                                       '"model" (the items the model knows) when none is online')
    recommended_items: int = Field(description="distinct items in at least one user's list")
    share: float = Field(description="recommended_items / catalogue_items")
    lists: int = Field(description="users with a stored list")
    slots: int = Field(description="(user, item) entries over all stored lists")


class LastPublishPublic(BaseModel):
    """The newest model version written to MongoDB. MongoDB records publishes, not pipeline
    runs: a run that failed before publishing is not visible here (see the Prefect UI)."""

    model_config = _examples({"version": "20240501T120000Z-3f9c", "status": "ready",
                              "active": True, "created_at": _AT, "ready_at": _AT,
                              "publish_seconds": 4.2})

    version: str
    status: str = Field(description='"ready"; "building" while (or when a crash left) a '
                                    'publish unfinished; "abandoned" once the next publish '
                                    "cleaned such a one up")
    active: bool
    created_at: datetime | None = Field(None, description="when the publish started")
    ready_at: datetime | None = Field(None, description="when it was written and verified")
    publish_seconds: float | None = None


class OverviewPublic(BaseModel):
    """Counts of the catalogue and the served model, with the last publish."""

    model_config = _examples({
        "model_version": "20240501T120000Z-3f9c", "generated_at": _AT, "switched_at": _AT,
        "previous_version": "20240424T120000Z-1a2b", "users": 943, "items": 1682,
        "interactions": 100000, "model_users": 943, "model_items": 1650,
        "feature_snapshot": "s-20240501", "features_as_of": _AT,
        "last_publish": {"version": "20240501T120000Z-3f9c", "status": "ready", "active": True,
                         "created_at": _AT, "ready_at": _AT, "publish_seconds": 4.2},
        "coverage": {"catalogue_items": 1682, "catalogue": "online features",
                     "recommended_items": 871, "share": 0.5178, "lists": 943, "slots": 47150},
        "metrics": {"als.ndcg@10": 0.2311, "als.recall@10": 0.1873, "k": 10}})

    model_version: str
    generated_at: datetime | None = Field(description="when the recommendations were computed")
    switched_at: datetime | None = Field(description="when this version started being served")
    previous_version: str | None = Field(description="what a rollback would serve")
    users: int | None = Field(description="users in the online feature snapshot")
    items: int | None = Field(description="items in the online feature snapshot (catalogue)")
    interactions: int | None = Field(description="events in the online feature snapshot")
    model_users: int | None = Field(description="users with a stored list")
    model_items: int | None = Field(description="items the model knows")
    feature_snapshot: str | None = Field(description="the online feature snapshot")
    features_as_of: datetime | None
    last_publish: LastPublishPublic | None
    coverage: CoveragePublic | None = Field(
        description="null for versions published before coverage was recorded")
    metrics: dict[str, int | float] = Field(
        default_factory=dict, description="the active version's offline metrics, flattened "
                                          "(`als.ndcg@10`: the ALS model's NDCG at k)")


class CategoryPublic(BaseModel):
    """One genre: catalogue items and interactions, and its part of the recommendations."""

    model_config = _examples({"genre": "Drama", "items": 725, "interactions": 39895,
                              "interaction_share": 0.399, "recommended_items": 402,
                              "coverage": 0.5545, "slots": 20110, "rec_share": 0.4265})

    genre: str
    items: int | None = Field(description="catalogue items with this genre")
    interactions: int | None = Field(description="events on those items")
    interaction_share: float | None = Field(description="interactions / all interactions")
    recommended_items: int | None = Field(description="its items in at least one list")
    coverage: float | None = Field(description="recommended_items / items")
    slots: int | None = Field(description="list entries whose item has this genre")
    rec_share: float | None = Field(
        description="slots / all list entries; an item with several genres counts for each, "
                    "so shares can sum to more than 1")


class CategoriesPublic(BaseModel):
    """Per genre, busiest first. `items` and `interactions` come from the online feature
    snapshot; while none is online, `items` counts the model's items and the interaction
    columns are null. The recommendation columns are null when the version has no genre
    attributes."""

    model_config = _examples({
        "model_version": "20240501T120000Z-3f9c", "feature_snapshot": "s-20240501",
        "items": 1682, "interactions": 100000, "slots": 47150,
        "categories": [{"genre": "Drama", "items": 725, "interactions": 39895,
                        "interaction_share": 0.399, "recommended_items": 402,
                        "coverage": 0.5545, "slots": 20110, "rec_share": 0.4265}]})

    model_version: str
    feature_snapshot: str | None
    items: int | None
    interactions: int | None
    slots: int | None
    categories: list[CategoryPublic]
