"""Dependency aliases: handlers never open connections or read the pointer themselves."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Query, Request
from fastapi.exceptions import RequestValidationError
from pymongo.asynchronous.database import AsyncDatabase

from recsys.errors import ServiceUnavailable
from recsys.settings import Settings
from serving.api.active import ActiveState

DEFAULT_K = 10


def get_settings(request: Request) -> Settings:
    return request.app.state.settings


def get_db(request: Request) -> AsyncDatabase:
    return request.app.state.db


def get_active(request: Request) -> ActiveState:
    state = request.app.state.active.state
    if state is None:
        raise ServiceUnavailable("no model version is active yet")
    return state


SettingsDep = Annotated[Settings, Depends(get_settings)]
DbDep = Annotated[AsyncDatabase, Depends(get_db)]
ActiveVersionDep = Annotated[ActiveState, Depends(get_active)]


def _bounded_k(k: int | None, limit: int) -> int:
    if k is None:
        return min(DEFAULT_K, limit)
    if k > limit:
        raise RequestValidationError([{
            "type": "less_than_equal",
            "loc": ("query", "k"),
            "msg": f"Input should be less than or equal to {limit}",
            "input": k,
            "ctx": {"le": limit},
        }])
    return k


_K_DOC = "number of items, 1..{} (the stored list length); default min(10, {})"


def get_rec_k(
    settings: SettingsDep,
    k: Annotated[int | None, Query(ge=1, description=_K_DOC.format("top_n", "top_n"))] = None,
) -> int:
    return _bounded_k(k, settings.top_n)


def get_similar_k(
    settings: SettingsDep,
    k: Annotated[
        int | None, Query(ge=1, description=_K_DOC.format("similar_n", "similar_n"))
    ] = None,
) -> int:
    return _bounded_k(k, settings.similar_n)


RecKDep = Annotated[int, Depends(get_rec_k)]
SimilarKDep = Annotated[int, Depends(get_similar_k)]
