"""Liveness (`/health`, no database) and readiness (`/ready`: MongoDB up and a version active)."""

from __future__ import annotations

from typing import Any

import pymongo
from fastapi import APIRouter, Request
from pymongo.errors import PyMongoError

from recsys.errors import ServiceUnavailable
from serving.api.deps import DbDep, SettingsDep
from serving.api.models import ErrorPublic, HealthPublic, ReadyPublic

router = APIRouter(tags=["health"])


@router.get("/health", response_model=HealthPublic, summary="The process is up")
async def health() -> dict[str, Any]:
    return {"status": "ok"}


@router.get(
    "/ready",
    response_model=ReadyPublic,
    responses={503: {"model": ErrorPublic}},
    summary="MongoDB is reachable and a model version is active",
)
async def ready(request: Request, db: DbDep, settings: SettingsDep) -> dict[str, Any]:
    try:
        with pymongo.timeout(min(settings.mongodb_timeout_ms, 2000) / 1000):
            await db.command("ping")
    except PyMongoError as exc:
        raise ServiceUnavailable(f"MongoDB is unreachable: {exc}") from exc
    state = request.app.state.active.state
    if state is None:
        raise ServiceUnavailable("no model version is active yet")
    return {
        "status": "ready",
        "model_version": state.version,
        "generated_at": state.generated_at,
        "switched_at": state.switched_at,
    }
