"""The serving API: `create_app(settings)` builds a FastAPI app over the active model version.

Run it with `uvicorn --factory serving.api.main:create_app` (one AsyncMongoClient per worker
process, made in the lifespan, so forking workers is safe).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import pymongo
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from pymongo import AsyncMongoClient
from pymongo.errors import ConnectionFailure, PyMongoError

from recsys.errors import RecsysError
from recsys.settings import Settings
from serving.api.active import ActiveVersionCache
from serving.api.routes import health, items, recommendations
from serving.store import CODEC_OPTIONS

logger = logging.getLogger(__name__)

DEFAULT_MAX_POOL_SIZE = 100
RETRY_AFTER_SECONDS = 5


def _async_client(settings: Settings) -> AsyncMongoClient:
    timeout = settings.mongodb_timeout_ms
    return AsyncMongoClient(
        settings.mongodb_uri,
        maxPoolSize=getattr(settings, "mongodb_max_pool_size", DEFAULT_MAX_POOL_SIZE),
        serverSelectionTimeoutMS=timeout,
        connectTimeoutMS=timeout,
        timeoutMS=timeout,
        tz_aware=True,
        tzinfo=CODEC_OPTIONS.tzinfo,
    )


@asynccontextmanager
async def _lifespan(app: FastAPI) -> AsyncIterator[None]:
    settings: Settings = app.state.settings
    client = _async_client(settings)
    app.state.client = client
    app.state.db = client.get_database(settings.mongodb_db, codec_options=CODEC_OPTIONS)
    cache = ActiveVersionCache(app.state.db)
    app.state.active = cache
    try:
        with pymongo.timeout(min(settings.mongodb_timeout_ms, 2000) / 1000):
            await cache.refresh()
    except PyMongoError as exc:
        logger.warning("MongoDB not reachable at start-up (%s); will keep polling", exc)
    poller = asyncio.create_task(cache.run(settings.active_poll_seconds), name="active-poller")
    try:
        yield
    finally:
        poller.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await poller
        await client.close()


def _error(status: int, detail: str) -> JSONResponse:
    headers = {"Retry-After": str(RETRY_AFTER_SECONDS)} if status == 503 else None
    return JSONResponse({"detail": detail}, status_code=status, headers=headers)


async def _recsys_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RecsysError)
    return _error(exc.status_code, str(exc))


async def _mongo_error(request: Request, exc: Exception) -> JSONResponse:
    if isinstance(exc, ConnectionFailure) or getattr(exc, "timeout", False):
        logger.warning("MongoDB unavailable: %s", exc)
        return _error(503, "MongoDB is unavailable")
    logger.exception("MongoDB error", exc_info=exc)
    return _error(500, "database error")


def create_app(settings: Settings | None = None) -> FastAPI:
    """Build the API. `settings` defaults to `Settings()` (environment / `.env`)."""
    settings = settings or Settings()
    app = FastAPI(
        title="recsys serving API",
        summary="Batch-computed recommendations, similar items and embeddings from MongoDB.",
        version="0.1.0",
        lifespan=_lifespan,
    )
    app.state.settings = settings
    app.add_exception_handler(RecsysError, _recsys_error)
    app.add_exception_handler(PyMongoError, _mongo_error)
    app.include_router(recommendations.router)
    app.include_router(items.router)
    app.include_router(health.router)
    return app
