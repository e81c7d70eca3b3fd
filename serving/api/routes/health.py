"""Liveness (`/health`, no database, no key), readiness (`/ready`) and `/metrics`."""

from __future__ import annotations

import logging
from typing import Any

import pymongo
from fastapi import APIRouter, Depends, Request, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from pymongo.errors import PyMongoError

from recsys.errors import ServiceUnavailable
from serving.api.deps import ServicesDep, require_key
from serving.api.models import HealthPublic, ReadyPublic, error_responses

logger = logging.getLogger(__name__)

router = APIRouter(tags=["health"])
protected = APIRouter(tags=["health"], dependencies=[Depends(require_key)])


@router.get("/health", response_model=HealthPublic, summary="The process is up (no key needed)")
async def health() -> dict[str, Any]:
    return {"status": "ok"}


@router.head("/health", summary="The process is up (no body; for probes that send HEAD)",
             response_class=Response)
async def health_head() -> Response:
    return Response(media_type="application/json")


@protected.get(
    "/ready",
    response_model=ReadyPublic,
    responses=error_responses(503),
    summary="MongoDB is reachable and a model version is active",
)
async def ready(svc: ServicesDep) -> dict[str, Any]:
    try:
        with pymongo.timeout(min(svc.settings.mongodb_timeout_ms, 2000) / 1000):
            await svc.db.command("ping")
    except PyMongoError as exc:
        # the driver's message lists hosts, ports and topology state: for the log only
        logger.warning("/ready: MongoDB unreachable: %s", exc)
        raise ServiceUnavailable("MongoDB unreachable") from exc
    state = svc.active.state
    if state is None:
        raise ServiceUnavailable("no model version is active yet")
    return {
        "status": "ready",
        "model_version": state.version,
        "generated_at": state.generated_at,
        "switched_at": state.switched_at,
    }


@protected.get("/metrics", summary="Prometheus metrics of this process",
               response_class=Response)
async def metrics(request: Request, svc: ServicesDep) -> Response:
    return Response(generate_latest(svc.metrics.registry), media_type=CONTENT_TYPE_LATEST)
