"""The serving API: `create_app(settings)` builds a FastAPI app over the active model version.

Run it with `uvicorn --factory serving.api.main:app_from_environment` (what `recsys serve` does):
each worker process reads the settings once and makes one AsyncMongoClient in the lifespan, so
forking workers is safe. Each worker has its own document cache and rate limiter; with several
workers `/metrics` sums them all (see `serving.api.metrics`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import anyio
import pymongo
from fastapi import Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pymongo.errors import PyMongoError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import BaseRoute, Match

from recsys.errors import RecsysError
from recsys.mongo import CODEC_OPTIONS, async_mongo_client
from recsys.settings import Settings, load_settings
from serving.api.active import POLL_TIMEOUT_S, ActiveState, ActiveVersionCache
from serving.api.cache import DocumentCache, MongoGuard, is_outage, is_unavailable
from serving.api.coalesce import ReadCoalescer
from serving.api.deps import Services, require_key
from serving.api.docs import install_docs
from serving.api.logs import json_logging
from serving.api.metrics import ApiMetrics, multiprocess_dir
from serving.api.middleware import RequestMiddleware
from serving.api.models import error_responses
from serving.api.openapi import install_openapi
from serving.api.queries import BATCH_READ_IDS
from serving.api.routes import (
    admin,
    catalogue,
    data_docs,
    explorer,
    health,
    items,
    recommendations,
    stats,
)
from serving.api.security import (
    AUTH_FAILURE_BURST,
    AUTH_FAILURE_RATE,
    KeyChecker,
    TokenBucketLimiter,
    parse_keys,
)

logger = logging.getLogger(__name__)

API_DESCRIPTION = """\
**Keys.** With `RECSYS_API_KEYS` set, every endpoint but `/health` and these docs needs
`X-API-Key` (401 without a valid one); `/admin/...` always needs a key from
`RECSYS_ADMIN_API_KEYS` (403 with another key). Too many failed authentications from one
address, or a key over its rate limit, get 429 with `Retry-After`.

**Errors** are JSON `{"detail": ...}`; every answer carries one `X-Request-ID` (the caller's
when it is a safe token). 503 with `Retry-After`: no active model version, or MongoDB
unreachable or too slow.
"""


@asynccontextmanager
async def _lifespan(app: FastAPI) -> AsyncIterator[None]:
    settings: Settings = app.state.settings
    with contextlib.ExitStack() as stack:
        if settings.api_log_json:
            stack.enter_context(json_logging())
        try:
            async with _services(app):
                yield
        finally:
            app.state.metrics.process_exit()


@asynccontextmanager
async def _services(app: FastAPI) -> AsyncIterator[None]:
    settings: Settings = app.state.settings
    metrics: ApiMetrics = app.state.metrics
    client = async_mongo_client(settings)
    app.state.sync_client = None  # made on the first admin call (see routes/admin.py)
    db = client.get_database(settings.mongodb_db, codec_options=CODEC_OPTIONS)
    cache = DocumentCache(settings.api_cache_entries, metrics)
    guard = MongoGuard(metrics, timeout_s=settings.api_read_timeout_ms / 1000,
                       retry_after=settings.api_retry_after_seconds)

    def on_change(state: ActiveState | None) -> None:
        cache.clear()
        metrics.set_active_version(state.version if state else None)

    def on_poll(exc: BaseException | None) -> None:
        if exc is None:
            guard.success()
        elif is_outage(exc):  # a poll that was merely slow does not open the breaker
            metrics.mongo_errors.labels("unavailable").inc()
            guard.failure(exc)

    active = ActiveVersionCache(db, on_change=on_change, on_poll=on_poll)
    app.state.services = Services(settings=settings, db=db, active=active, cache=cache,
                                  guard=guard, metrics=metrics,
                                  reads=ReadCoalescer(guard, max_ids=BATCH_READ_IDS))
    try:
        with pymongo.timeout(min(settings.mongodb_timeout_ms, 2000) / 1000):
            await active.refresh()
    except PyMongoError as exc:
        logger.warning("MongoDB not reachable at start-up (%s); will keep polling", exc)
        on_poll(exc)
    poller = asyncio.create_task(active.run(settings.active_poll_seconds), name="active-poller")
    try:
        yield
    finally:
        active.stop()
        poller.cancel()
        with contextlib.suppress(asyncio.CancelledError, TimeoutError):
            await asyncio.wait_for(poller, POLL_TIMEOUT_S + 1)
        await client.close()
        if app.state.sync_client is not None:
            await anyio.to_thread.run_sync(app.state.sync_client.close)


def _error(request: Request, status: int, detail: object, retry_after: int | None = None,
           headers: dict[str, str] | None = None) -> JSONResponse:
    headers = dict(headers or {})  # X-Request-ID: RequestMiddleware adds it to every answer
    if status in (429, 503):
        default = request.app.state.settings.api_retry_after_seconds
        headers["Retry-After"] = str(retry_after or default)
    return JSONResponse({"detail": detail}, status_code=status, headers=headers)


async def _recsys_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RecsysError)
    if exc.status_code >= 500 and exc.status_code != 503:
        logger.error("request failed: %s", exc)
    return _error(request, exc.status_code, str(exc), getattr(exc, "retry_after", None))


async def _mongo_error(request: Request, exc: Exception) -> JSONResponse:
    if is_unavailable(exc):
        logger.warning("MongoDB unavailable: %s", exc)
        return _error(request, 503, "MongoDB is unavailable")
    logger.error("MongoDB error: %s", exc)
    return _error(request, 500, "database error")


async def _validation_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    errors = [{k: v for k, v in e.items() if k in ("type", "loc", "msg")}
              for e in exc.errors()]
    return _error(request, 422, errors)


async def _http_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    headers = dict(exc.headers or {})
    if exc.status_code == 405:
        headers["Allow"] = _allowed_methods(request)
    return _error(request, exc.status_code, exc.detail, headers=headers)


_METHODS = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS")


def _allowed_methods(request: Request) -> str:
    """Every method some route of this path accepts. Starlette's own `Allow` names only the
    first route that matched the path (so `GET /health` + `HEAD /health` would say just GET)."""
    routes: list[BaseRoute] = request.app.router.routes
    allowed = [method for method in _METHODS
               if any(route.matches({**request.scope, "method": method})[0] == Match.FULL
                      for route in routes)]
    return ", ".join(allowed)


async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
    # RequestMiddleware answers errors raised inside it; this covers anything outside it
    logger.error("unhandled error: %r", exc, exc_info=exc)
    return _error(request, 500, "internal error")


def create_app(settings: Settings) -> FastAPI:
    """Build the API over the serving database that `settings` names."""
    app = FastAPI(
        title="recsys serving API",
        summary="Batch-computed recommendations, similar items and embeddings from MongoDB.",
        description=API_DESCRIPTION,
        version="0.2.0",
        lifespan=_lifespan,
        docs_url=None,  # CDN pages; install_docs serves them with packaged assets
        redoc_url=None,
    )
    metrics = ApiMetrics(multiprocess_dir())
    app.state.settings = settings
    app.state.metrics = metrics
    app.state.keys = KeyChecker(parse_keys(settings.api_keys), parse_keys(settings.admin_api_keys))
    app.state.limiter = TokenBucketLimiter(settings.api_rate_limit_per_second,
                                           settings.api_rate_limit_burst)
    app.state.auth_failures = TokenBucketLimiter(AUTH_FAILURE_RATE, AUTH_FAILURE_BURST)
    app.add_exception_handler(RecsysError, _recsys_error)
    app.add_exception_handler(PyMongoError, _mongo_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(Exception, _unexpected)
    keyed = [Depends(require_key)]
    keyed_errors = error_responses(401, 429)
    app.include_router(recommendations.router, dependencies=keyed, responses=keyed_errors)
    app.include_router(items.router, dependencies=keyed, responses=keyed_errors)
    app.include_router(catalogue.router, dependencies=keyed, responses=keyed_errors)
    app.include_router(stats.router, dependencies=keyed, responses=keyed_errors)
    app.include_router(explorer.router)  # its own key check: header or ?key=
    app.include_router(health.router)
    app.include_router(health.protected, responses=keyed_errors)
    app.include_router(admin.router)
    app.include_router(data_docs.router)
    install_openapi(app, settings)
    install_docs(app)
    app.add_middleware(RequestMiddleware, metrics=metrics,
                       max_body_bytes=settings.api_max_body_bytes,
                       access_log=settings.api_access_log)
    return app


def app_from_environment() -> FastAPI:
    """The uvicorn factory: read the settings (environment / `.env`) once, build the API."""
    return create_app(load_settings())
