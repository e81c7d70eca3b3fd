"""`/stats/...`: catalogue and recommendation counts of the served version."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter

from serving.api import catalogue
from serving.api.catalogue_models import CategoriesPublic, OverviewPublic
from serving.api.deps import ActiveVersionDep, ServicesDep
from serving.api.models import error_responses

router = APIRouter(prefix="/stats", tags=["stats"], responses=error_responses(503))


@router.get("/overview", response_model=OverviewPublic, summary="Catalogue and model at a glance")
async def get_overview(svc: ServicesDep, active: ActiveVersionDep) -> dict[str, Any]:
    """Users, items and interactions of the online feature snapshot; the active version, when
    it was switched and what it replaced; catalogue coverage of its recommendation lists
    (share of catalogue items in at least one user's stored list, counted when the version
    was published); its offline metrics; and the last publish (MongoDB knows publishes, not
    pipeline runs: a run that stopped before publishing shows in the Prefect UI only)."""
    return await catalogue.overview(svc, active)


@router.get("/categories", response_model=CategoriesPublic, summary="Per-genre counts")
async def get_categories(svc: ServicesDep, active: ActiveVersionDep) -> dict[str, Any]:
    """Per genre: catalogue items and interactions (online feature snapshot), and the genre's
    share of the active version's recommendation list entries and of its items reached."""
    return await catalogue.categories(svc, active)
