"""`GET /items` and `GET /items/{item_id}`: the catalogue as the online feature store has it."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query

from serving.api import catalogue
from serving.api.catalogue_models import ItemDetailPublic, ItemsPagePublic
from serving.api.deps import ActiveVersionDep, ServicesDep, build_options
from serving.api.ids import ItemIdPath
from serving.api.models import FilterSpec, error_responses

router = APIRouter(prefix="/items", tags=["catalogue"])

ITEMS_PAGE_MAX = 100
"""Most items one `GET /items` page returns."""

_FILTER_DOC = ("field:value on the catalogue's item fields (attributes and features), e.g. "
               "genres:Comedy or release_year:1995; a list field matches when it contains the "
               "value; all filters must match")


@router.get(
    "",
    response_model=ItemsPagePublic,
    responses=error_responses(503),
    summary="Browse the catalogue",
)
async def list_items(
    svc: ServicesDep,
    active: ActiveVersionDep,
    k: Annotated[int, Query(ge=1, le=ITEMS_PAGE_MAX,
                            description=f"items per page, 1..{ITEMS_PAGE_MAX}")] = 10,
    offset: Annotated[int, Query(ge=0, description="items to skip (pagination)")] = 0,
    genre: Annotated[list[str] | None, Query(
        description="keep items of this genre (shorthand for filter=genres:VALUE)")] = None,
    filter: Annotated[list[FilterSpec] | None, Query(description=_FILTER_DOC)] = None,  # noqa: A002
) -> dict[str, Any]:
    """The items of the online feature snapshot (the catalogue the pipeline published with
    the active model), in item-id order, with their attributes, popularity and whether the
    active model knows them. Filters are exact matches; an unknown field is a 422 that lists
    the known ones. While no feature snapshot is online the page is empty."""
    opts = build_options(k=k, limit=ITEMS_PAGE_MAX, offset=0, exclude=None, genre=genre,
                         filters=filter, explain=False)
    return await catalogue.list_items(svc, active, opts.filters, offset=offset, k=opts.k)


@router.get(
    "/{item_id}",
    response_model=ItemDetailPublic,
    responses=error_responses(404, 503),
    summary="An item's attributes and online features",
)
async def get_item(item_id: ItemIdPath, svc: ServicesDep,
                   active: ActiveVersionDep) -> dict[str, Any]:
    """Everything the online feature store holds about an item: its catalogue attributes
    (title, genres, ...) and the item_features view's values at the snapshot's as-of time.
    404 when the item is not in the online snapshot (or none is online)."""
    return await catalogue.item_detail(svc, active, item_id)
