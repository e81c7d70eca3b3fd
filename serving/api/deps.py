"""Dependency aliases: handlers never open connections, check keys or read the pointer."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.security import APIKeyHeader
from pymongo.asynchronous.database import AsyncDatabase

from recsys.errors import RateLimited, ServiceUnavailable
from recsys.settings import Settings
from serving.api.active import ActiveState, ActiveVersionCache
from serving.api.cache import DocumentCache, MongoGuard
from serving.api.metrics import ApiMetrics
from serving.api.security import API_KEY_HEADER, KeyChecker, TokenBucketLimiter

DEFAULT_K = 10
MAX_EXCLUDE = 500
MAX_FILTERS = 10


@dataclass
class Services:
    """Everything a handler may need, built once per process in the lifespan."""

    settings: Settings
    db: AsyncDatabase
    active: ActiveVersionCache
    cache: DocumentCache
    guard: MongoGuard
    metrics: ApiMetrics


async def get_settings(request: Request) -> Settings:
    return request.app.state.settings


async def get_services(request: Request) -> Services:
    return request.app.state.services


async def get_db(request: Request) -> AsyncDatabase:
    return request.app.state.services.db


async def get_active(request: Request) -> ActiveState:
    state = request.app.state.services.active.state
    if state is None:
        raise ServiceUnavailable("no model version is active yet")
    return state


SettingsDep = Annotated[Settings, Depends(get_settings)]
ServicesDep = Annotated[Services, Depends(get_services)]
DbDep = Annotated[AsyncDatabase, Depends(get_db)]
ActiveVersionDep = Annotated[ActiveState, Depends(get_active)]

# ------------------------------------------------------------------ auth and rate limits

_api_key = APIKeyHeader(name=API_KEY_HEADER, auto_error=False,
                        description="required when RECSYS_API_KEYS is set")


def _rate_limit(request: Request, key: str | None) -> None:
    limiter: TokenBucketLimiter = request.app.state.limiter
    caller = f"key:{key}" if key else f"ip:{request.client.host if request.client else '-'}"
    wait = limiter.allow(caller)
    if wait > 0:
        request.app.state.services.metrics.rate_limited.inc()
        raise RateLimited("rate limit exceeded", retry_after=max(1, round(wait + 0.5)))


async def require_key(request: Request, key: Annotated[str | None, Depends(_api_key)]) -> None:
    """Every endpoint but /health: a valid key when keys are configured, then the rate limit."""
    checker: KeyChecker = request.app.state.keys
    checker.check(key)
    _rate_limit(request, key)


async def require_admin(request: Request, key: Annotated[str | None, Depends(_api_key)]) -> None:
    """Admin endpoints: always an admin key."""
    checker: KeyChecker = request.app.state.keys
    checker.check(key, admin=True)
    _rate_limit(request, key)


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
    if len(excluded) > MAX_EXCLUDE:
        raise _invalid((where, "exclude"), f"at most {MAX_EXCLUDE} excluded ids", len(excluded))
    pairs: list[tuple[str, str]] = [("genres", g) for g in genre or () if g]
    for raw in filters or ():
        attr, sep, value = raw.partition(":")
        if not sep or not attr or not value:
            raise _invalid((where, "filter"), "filter must look like attribute:value", raw)
        pairs.append((attr, value))
    if len(pairs) > MAX_FILTERS:
        raise _invalid((where, "filter"), f"at most {MAX_FILTERS} filters", len(pairs))
    return ListOptions(k=k, offset=offset, exclude=excluded, filters=tuple(pairs),
                       explain=explain)


_K_DOC = "items per page, 1..{0}; default min(10, {0})"
_EXCLUDE_DOC = "item ids to leave out (repeat the parameter or separate with commas)"
_GENRE_DOC = "keep items of this genre (shorthand for filter=genres:VALUE)"
_FILTER_DOC = "attribute:value on materialised item attributes, e.g. genres:Comedy; all must match"


async def get_rec_options(
    settings: SettingsDep,
    k: Annotated[int | None, Query(ge=1, description=_K_DOC.format("RECSYS_TOP_N"))] = None,
    offset: Annotated[int, Query(ge=0, description="items to skip (pagination)")] = 0,
    exclude: Annotated[list[str] | None, Query(description=_EXCLUDE_DOC)] = None,
    genre: Annotated[list[str] | None, Query(description=_GENRE_DOC)] = None,
    filter: Annotated[list[str] | None, Query(description=_FILTER_DOC)] = None,  # noqa: A002
    explain: Annotated[bool, Query(description="add `because` to each item")] = False,
) -> ListOptions:
    return build_options(k=k, limit=settings.top_n, offset=offset, exclude=exclude,
                         genre=genre, filters=filter, explain=explain)


async def get_similar_options(
    settings: SettingsDep,
    k: Annotated[int | None, Query(ge=1, description=_K_DOC.format("RECSYS_SIMILAR_N"))] = None,
    offset: Annotated[int, Query(ge=0, description="items to skip (pagination)")] = 0,
    exclude: Annotated[list[str] | None, Query(description=_EXCLUDE_DOC)] = None,
    genre: Annotated[list[str] | None, Query(description=_GENRE_DOC)] = None,
    filter: Annotated[list[str] | None, Query(description=_FILTER_DOC)] = None,  # noqa: A002
) -> ListOptions:
    return build_options(k=k, limit=settings.similar_n, offset=offset, exclude=exclude,
                         genre=genre, filters=filter, explain=False)


RecOptionsDep = Annotated[ListOptions, Depends(get_rec_options)]
SimilarOptionsDep = Annotated[ListOptions, Depends(get_similar_options)]
