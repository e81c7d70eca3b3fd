"""Liveness (`/health`, no database, no key), readiness (`/ready`) and `/metrics`."""

from __future__ import annotations

import logging
from typing import Any

import pymongo
from fastapi import APIRouter, Depends, Response
from prometheus_client import CONTENT_TYPE_LATEST
from pymongo.errors import PyMongoError

from recsys.errors import ServiceUnavailable
from serving.api.deps import ServicesDep, require_key
from serving.api.models import HealthPublic, ReadyPublic, error_responses

logger = logging.getLogger(__name__)

_METRICS_EXAMPLE = (
    '# TYPE recsys_http_requests_total counter\n'
    'recsys_http_requests_total{method="GET",route="/users/{user_id}/recommendations",'
    'status="200"} 1234.0\n'
    '# TYPE recsys_active_model_version_info gauge\n'
    'recsys_active_model_version_info{version="20260105T101500Z-1a2b3c"} 1.0\n'
)

router = APIRouter(tags=["health"])
protected = APIRouter(tags=["health"], dependencies=[Depends(require_key)])


@router.get("/health", response_model=HealthPublic, summary="The process is up (no key needed)")
async def health() -> dict[str, Any]:
    """Liveness: answers as long as the process runs; reads nothing, needs no key (for
    container health checks and load balancers)."""
    return {"status": "ok"}


@router.head("/health", summary="The process is up (no body; for probes that send HEAD)",
             response_class=Response)
async def health_head() -> Response:
    """Liveness for probes that send HEAD: 200, no body."""
    return Response(media_type="application/json")


@protected.get(
    "/ready",
    response_model=ReadyPublic,
    responses=error_responses(503),
    summary="MongoDB is reachable and a model version is active",
)
async def ready(svc: ServicesDep) -> dict[str, Any]:
    """Readiness: pings MongoDB (within 2 s) and names the version being served. 503 with
    `Retry-After` while MongoDB is unreachable (the driver's detail goes to the log only) or
    before any version is active."""
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


@protected.get(
    "/metrics",
    summary="Prometheus metrics (all workers)",
    response_class=Response,
    responses={200: {"content": {CONTENT_TYPE_LATEST: {"example": _METRICS_EXAMPLE}},
                     "description": "Prometheus text format"}},
)
async def metrics(svc: ServicesDep) -> Response:
    """Request counts and latency by route and status, document cache hits and size, the
    active model version, MongoDB errors and rate-limit refusals, in Prometheus text format.
    With `recsys serve --workers N` the values are summed over every worker."""
    return Response(svc.metrics.exposition(), media_type=CONTENT_TYPE_LATEST)
