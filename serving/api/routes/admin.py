"""`/admin/...`: list versions and switch the served one (always needs an admin key)."""

from __future__ import annotations

from typing import Any

import anyio
from fastapi import APIRouter, Depends, Request

from recsys.errors import Conflict, PublishError
from recsys.mongo import mongo_client
from serving.api.deps import ServicesDep, require_admin
from serving.api.models import ActivatePublic, ActivateRequest, VersionPublic, error_responses
from serving.publish import publish_model
from serving.store import MongoServingStore

router = APIRouter(prefix="/admin", tags=["admin"], dependencies=[Depends(require_admin)],
                   responses=error_responses(401, 403, 429))

ADMIN_LOCK_WAIT_S = 30.0
"""Longest an admin request waits for another publish (capped by the lock timeout setting)."""


def _store(request: Request) -> MongoServingStore:
    """The sync store behind admin reads (one client per process, made on first use)."""
    state = request.app.state
    if state.sync_client is None:
        state.sync_client = mongo_client(state.settings,
                                         operation_timeout_ms=state.settings.mongodb_timeout_ms)
    return MongoServingStore(state.sync_client[state.settings.mongodb_db])


@router.get("/versions", response_model=list[VersionPublic], summary="Published versions")
async def list_versions(request: Request) -> list[dict[str, Any]]:
    """Every version MongoDB holds, newest first: its status (`building` while being written,
    then `ready`; `abandoned` for a day once a later publish cleaned up an unfinished one, its
    collections dropped), whether it is the one served, when it was created and made ready,
    when its lists were generated, and how many documents each collection holds."""
    docs = await anyio.to_thread.run_sync(_store(request).list_versions)
    return [{**d, "version": d["_id"]} for d in docs]


@router.post(
    "/active-version",
    response_model=ActivatePublic,
    responses=error_responses(400, 404, 409, 413),
    summary="Serve a model version (switch or roll back in one step)",
)
async def set_active_version(
    body: ActivateRequest, request: Request, svc: ServicesDep
) -> dict[str, Any]:
    """Serve `version` through the one publish path (`serving.publish.publish_model`): under the
    publish lock, with the online features of its snapshot. The API only switches between
    versions MongoDB already holds (it never writes one: that is `recsys models promote`). This
    process serves it at once, other workers within `RECSYS_ACTIVE_POLL_SECONDS`. 404: not a
    published version; 409: it cannot be switched to now (e.g. another publish holds the lock)."""
    settings = svc.settings
    wait = min(settings.publish_lock_timeout_s, ADMIN_LOCK_WAIT_S)
    try:
        result = await anyio.to_thread.run_sync(lambda: publish_model(
            settings, body.version, holder=f"POST /admin/active-version {body.version}",
            lock_timeout_s=wait, write_missing=False))
    except PublishError as exc:
        raise Conflict(str(exc)) from exc
    await svc.active.refresh()
    return {"active_version": result.version,
            "previous_version": None if result.skipped else result.previous_version}
