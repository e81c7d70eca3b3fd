"""Dependency aliases: handlers never open connections, check keys or read the pointer."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Annotated

from fastapi import Depends, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.security import APIKeyHeader, HTTPBasic, HTTPBasicCredentials
from pymongo.asynchronous.database import AsyncDatabase
from starlette.exceptions import HTTPException as StarletteHTTPException

from recsys.errors import RateLimited, ServiceUnavailable, Unauthorized
from recsys.settings import Settings
from serving.api.active import ActiveState, ActiveVersionCache
from serving.api.aggregates import VersionCache
from serving.api.cache import DocumentCache, MongoGuard
from serving.api.coalesce import ReadCoalescer
from serving.api.ids import check_entity_id
from serving.api.metrics import ApiMetrics
from serving.api.models import FILTER_PATTERN, ListQuery
from serving.api.security import API_KEY_HEADER, KeyChecker, TokenBucketLimiter

DEFAULT_K = 10
BROWSER_REALM = "recsys admin"
MAX_EXCLUDE = 500
MAX_FILTERS = 10
_FILTER_RE = re.compile(FILTER_PATTERN)


@dataclass
class Services:
    """Everything a handler may need, built once per process in the lifespan."""

    settings: Settings
    db: AsyncDatabase
    active: ActiveVersionCache
    cache: DocumentCache
    guard: MongoGuard
    metrics: ApiMetrics
    reads: ReadCoalescer
    aggregates: VersionCache = field(default_factory=VersionCache)


async def get_settings(request: Request) -> Settings:
    return request.app.state.settings


def services(request: Request) -> Services:
    """This process's services (built in the lifespan)."""
    return request.app.state.services


def active_state(svc: Services) -> ActiveState:
    """The version being served.

    Raises:
        ServiceUnavailable: no version is active yet (503).
    """
    state = svc.active.state
    if state is None:
        raise ServiceUnavailable("no model version is active yet")
    return state


async def get_services(request: Request) -> Services:
    return services(request)


async def get_active(request: Request) -> ActiveState:
    return active_state(services(request))


SettingsDep = Annotated[Settings, Depends(get_settings)]
ServicesDep = Annotated[Services, Depends(get_services)]
ActiveVersionDep = Annotated[ActiveState, Depends(get_active)]

# ------------------------------------------------------------------ auth and rate limits

_api_key = APIKeyHeader(name=API_KEY_HEADER, auto_error=False,
                        description="required when RECSYS_API_KEYS is set")


def _refuse(request: Request, message: str, wait: float) -> RateLimited:
    request.app.state.metrics.rate_limited.inc()
    return RateLimited(message, retry_after=max(1, round(wait + 0.5)))


def _guard(request: Request, key: str | None, *, admin: bool) -> None:
    """Throttle failed authentications per client address, check the key, then rate-limit the
    caller: the validated key, or the client address when the API is open (a header that was
    not validated never names a bucket, so fresh random keys cannot dodge the limit)."""
    state = request.app.state
    address = request.client.host if request.client else "-"
    failures: TokenBucketLimiter = state.auth_failures
    wait = failures.wait(address)
    if wait > 0:
        raise _refuse(request, "too many failed authentications from this address", wait)
    checker: KeyChecker = state.keys
    try:
        valid = checker.check(key, admin=admin)
    except Unauthorized:
        failures.allow(address)  # takes one of the address's tokens
        raise
    limiter: TokenBucketLimiter = state.limiter
    wait = limiter.allow(f"key:{valid}" if valid else f"ip:{address}")
    if wait > 0:
        raise _refuse(request, "rate limit exceeded", wait)


async def require_key(request: Request, key: Annotated[str | None, Depends(_api_key)]) -> None:
    """Every endpoint but /health: a valid key when keys are configured, then the rate limit."""
    _guard(request, key, admin=False)


def check_key(request: Request) -> None:
    """`require_key` for a caller that holds only the request (`lean_route.LeanRoute`): the
    header as `APIKeyHeader` reads it (an empty value is no key)."""
    _guard(request, request.headers.get(API_KEY_HEADER) or None, admin=False)


async def require_key_or_param(
    request: Request, key: Annotated[str | None, Depends(_api_key)],
    key_param: Annotated[str | None, Query(
        alias="key", description="the API key, for a browser that cannot send X-API-Key "
                                 "(the header wins when both are given)")] = None,
) -> None:
    """HTML pages: like `require_key`, with the key also accepted as `?key=`."""
    _guard(request, key or key_param, admin=False)


async def require_admin(request: Request, key: Annotated[str | None, Depends(_api_key)]) -> None:
    """Admin endpoints: always an admin key."""
    _guard(request, key, admin=True)


_basic = HTTPBasic(auto_error=False, realm=BROWSER_REALM,
                   description="browsers: any user name, an admin key as the password")


async def require_admin_browser(
    request: Request, key: Annotated[str | None, Depends(_api_key)],
    basic: Annotated[HTTPBasicCredentials | None, Depends(_basic)],
) -> None:
    """Admin pages a browser opens from a link (Data Docs): an admin key as `X-API-Key`, or as
    the password of HTTP Basic auth, which the browser asks for on the 401."""
    try:
        _guard(request, key or (basic.password if basic else None), admin=True)
    except Unauthorized as exc:
        raise StarletteHTTPException(401, str(exc), headers={
            "WWW-Authenticate": f'Basic realm="{BROWSER_REALM}", charset="UTF-8"'}) from exc


# ------------------------------------------------------------------ list options

@dataclass(frozen=True, slots=True)
class ListOptions:
    """How to cut a stored ranked list: drop `exclude`, keep items matching every filter
    (``(attribute, value)``), then return `k` items from `offset`."""

    k: int
    offset: int = 0
    exclude: frozenset[str] = frozenset()
    filters: tuple[tuple[str, str], ...] = ()
    explain: bool = False


def _invalid(loc: tuple[str, ...], msg: str, value: object) -> RequestValidationError:
    return RequestValidationError([{"type": "value_error", "loc": loc, "msg": msg,
                                    "input": value}])


def _bounded_k(k: int | None, limit: int, loc: tuple[str, ...] = ("query", "k")) -> int:
    if k is None:
        return min(DEFAULT_K, limit)
    if k > limit:
        raise RequestValidationError([{
            "type": "less_than_equal",
            "loc": loc,
            "msg": f"Input should be less than or equal to {limit}",
            "input": k,
            "ctx": {"le": limit},
        }])
    return k


def build_options(
    *, k: int | None, limit: int, offset: int, exclude: list[str] | None,
    genre: list[str] | None, filters: list[str] | None, explain: bool,
    where: str = "query",
) -> ListOptions:
    """Validate and normalise list options (shared by query strings and the batch body)."""
    k = _bounded_k(k, limit, (where, "k"))
    if offset > limit:
        raise _invalid((where, "offset"), f"offset must be <= {limit}", offset)
    excluded = frozenset(x for raw in exclude or () for x in raw.split(",") if x)
    for item_id in excluded:
        try:
            check_entity_id(item_id, what="an excluded item id")
        except ValueError as error:
            raise _invalid((where, "exclude"), str(error), None) from None
    if len(excluded) > MAX_EXCLUDE:
        raise _invalid((where, "exclude"), f"at most {MAX_EXCLUDE} excluded ids", len(excluded))
    pairs: list[tuple[str, str]] = [("genres", g) for g in genre or () if g]
    for raw in filters or ():
        if not _FILTER_RE.fullmatch(raw):
            raise _invalid((where, "filter"), "filter must look like attribute:value", raw)
        attr, _, value = raw.partition(":")
        pairs.append((attr, value))
    if len(pairs) > MAX_FILTERS:
        raise _invalid((where, "filter"), f"at most {MAX_FILTERS} filters", len(pairs))
    return ListOptions(k=k, offset=offset, exclude=excluded, filters=tuple(pairs),
                       explain=explain)


def query_options(query: ListQuery, limit: int) -> ListOptions:
    """`build_options` for the query model of a list endpoint (`explain` where it has one)."""
    return build_options(k=query.k, limit=limit, offset=query.offset, exclude=query.exclude,
                         genre=query.genre, filters=query.filter,
                         explain=getattr(query, "explain", False))
