"""`/admin/...`: switch the active version (always needs an admin key)."""

from __future__ import annotations

from typing import Any

import anyio
from fastapi import APIRouter, Depends, Request
from pymongo import MongoClient

from recsys.errors import NotFound, PublishError, RecsysError
from serving.api.deps import ServicesDep, require_admin
from serving.api.models import ActivatePublic, ActivateRequest, ErrorPublic, VersionPublic
from serving.store import MongoServingStore

router = APIRouter(prefix="/admin", tags=["admin"], dependencies=[Depends(require_admin)])


class Conflict(RecsysError):
    status_code = 409


def _store(request: Request) -> MongoServingStore:
    """The sync store behind admin calls (one client per process, made on first use)."""
    state = request.app.state
    if state.sync_client is None:
        timeout = state.settings.mongodb_timeout_ms
        state.sync_client = MongoClient(state.settings.mongodb_uri, tz_aware=True,
                                        serverSelectionTimeoutMS=timeout,
                                        connectTimeoutMS=timeout, timeoutMS=timeout)
    return MongoServingStore(state.sync_client[state.settings.mongodb_db])


@router.get("/versions", response_model=list[VersionPublic], summary="Published versions")
async def list_versions(request: Request) -> list[dict[str, Any]]:
    docs = await anyio.to_thread.run_sync(_store(request).list_versions)
    return [{**d, "version": d["_id"]} for d in docs]


@router.post(
    "/active-version",
    response_model=ActivatePublic,
    responses={404: {"model": ErrorPublic}, 409: {"model": ErrorPublic}},
    summary="Serve a kept version (switch or roll back in one step)",
)
async def set_active_version(
    body: ActivateRequest, request: Request, svc: ServicesDep
) -> dict[str, Any]:
    """Atomically repoint the API at `version` (status must be `ready`); this process serves
    it at once, other workers within `RECSYS_ACTIVE_POLL_SECONDS`."""
    store = _store(request)
    doc = await anyio.to_thread.run_sync(store.get_version, body.version)
    if doc is None:
        raise NotFound(f"model version {body.version!r} does not exist")
    try:
        previous = await anyio.to_thread.run_sync(store.activate, body.version)
    except PublishError as exc:
        raise Conflict(str(exc)) from exc
    await svc.active.refresh()
    return {"active_version": body.version,
            "previous_version": previous if previous != body.version else None}
