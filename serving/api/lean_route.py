"""`LeanRoute`: the hot read endpoints without FastAPI's generic per-request machinery.

FastAPI 0.150 solves every request's dependencies and parameters generically: on the 2-core
reference machine about 70 us per dependency and 40-100 us per query parameter, and it validates
the returned dict against the response model once more before encoding it. For
`GET /users/{id}/recommendations` that was most of the request (several times the work of
answering from the document cache). A `LeanRoute` keeps everything FastAPI derives from the
endpoint's signature (the OpenAPI operation: parameters, key header, responses), but answers
requests with a small solver built once from the same signature:

- the API key and rate limit are checked first (`deps.check_key`, what `require_key` does for
  the other routes: a LeanRoute is always keyed, so include its router with `require_key`
  for the docs to show the key);
- path parameters are validated with their declared types, and the query string with one
  pydantic model (`Annotated[Model, Query()]`), so the rules live in the declarations; a
  failure is the same 422 as FastAPI's (`loc` `["path", name]` / `["query", field]`);
- the endpoint returns the `Response` itself (its JSON encoded once, not validated again).

Only these parameter kinds are accepted (`request: Request`, path parameters, one query model);
anything else is refused when the route is built.
"""

from __future__ import annotations

import inspect
import typing
from collections.abc import Callable, Coroutine
from typing import Annotated, Any

from fastapi.exceptions import RequestValidationError
from fastapi.routing import APIRoute
from pydantic import BaseModel, TypeAdapter, ValidationError
from pydantic_core import to_json
from starlette.requests import Request
from starlette.responses import Response

from serving.api.deps import check_key

Handler = Callable[[Request], Coroutine[Any, Any, Response]]


def json_response(content: Any) -> Response:
    """`content` as JSON, encoded the way the response models would (pydantic's encoder:
    datetimes in ISO 8601 with `Z`), without validating it against them again."""
    return Response(to_json(content), media_type="application/json")


def _is_list(annotation: Any) -> bool:
    """`list[...]`, optionally `| None`: such a query field takes every repeated value."""
    if typing.get_origin(annotation) is list:
        return True
    return any(typing.get_origin(arg) is list for arg in typing.get_args(annotation))


def _errors(exc: ValidationError, loc: tuple[str | int, ...]) -> list[dict[str, Any]]:
    return [{**e, "loc": (*loc, *e["loc"])} for e in exc.errors(include_url=False)]


class _Solver:
    """The endpoint's arguments from a request: built once per route from its signature."""

    def __init__(self, endpoint: Callable[..., Any], path_names: set[str]) -> None:
        hints = typing.get_type_hints(endpoint, include_extras=True)
        self.request_name: str | None = None
        self.path: list[tuple[str, TypeAdapter[Any]]] = []
        self.query: tuple[str, type[BaseModel], frozenset[str]] | None = None
        for name in inspect.signature(endpoint).parameters:
            annotation = hints.get(name)
            base = typing.get_args(annotation)[0] if typing.get_origin(annotation) is \
                Annotated else annotation
            if base is Request:
                self.request_name = name
            elif name in path_names:
                self.path.append((name, TypeAdapter(annotation)))
            elif isinstance(base, type) and issubclass(base, BaseModel) and self.query is None:
                lists = frozenset(f for f, info in base.model_fields.items()
                                  if _is_list(info.annotation))
                self.query = (name, base, lists)
            else:
                raise TypeError(f"LeanRoute {endpoint.__name__}: parameter {name!r} is not "
                                "the request, a path parameter or the one query model")

    def arguments(self, request: Request) -> dict[str, Any]:
        values: dict[str, Any] = {}
        errors: list[dict[str, Any]] = []
        if self.request_name is not None:
            values[self.request_name] = request
        for name, adapter in self.path:
            try:
                values[name] = adapter.validate_python(request.path_params[name])
            except ValidationError as exc:
                errors += _errors(exc, ("path", name))
        if self.query is not None:
            name, model, lists = self.query
            params = request.query_params
            raw: dict[str, Any] = {}
            for field in model.model_fields:
                if field in lists:
                    if field in params:
                        raw[field] = params.getlist(field)
                elif field in params:
                    raw[field] = params[field]
            try:
                values[name] = model.model_validate(raw)
            except ValidationError as exc:
                errors += _errors(exc, ("query",))
        if errors:
            raise RequestValidationError(errors)
        return values


class LeanRoute(APIRoute):
    """An `APIRoute` for keyed GET reads, answered by a solver built from the endpoint's
    signature instead of FastAPI's per-request dependency solving (see the module doc).

    The endpoint must return a `Response`; `response_model` then only documents it.
    """

    def get_route_handler(self) -> Handler:
        solver = _Solver(self.endpoint, set(self.param_convertors))
        endpoint = self.endpoint

        async def handler(request: Request) -> Response:
            check_key(request)  # before validation, as require_key runs before parameters
            response = await endpoint(**solver.arguments(request))
            if not isinstance(response, Response):
                raise TypeError(f"LeanRoute {endpoint.__name__} must return a Response")
            return response

        return handler
