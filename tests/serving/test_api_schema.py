"""Regression (issue 13): the OpenAPI schema says what the API enforces (schemathesis gaps).

Before the fix the `filter` format, the bounds of `k`/`offset` (batch body and query) and the
400/401/429 answers were missing from the schema, 405 answers had no `Allow` header, and
`HEAD /health` was a 405. Each gap is checked in `app.openapi()` and with a real request.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from asgi_lifespan import LifespanManager
from fastapi import FastAPI

from recsys.settings import Settings
from serving.api.main import create_app
from serving.store import MongoServingStore
from serving.version_writer import write_payload_version
from tests.serving.payloads import make_payload

pytestmark = [pytest.mark.integration, pytest.mark.anyio]

TOP, SIMILAR, BATCH = 5, 4, 7
KEY = "user-key-1"
REC = "/users/{user_id}/recommendations"
SIM = "/items/{item_id}/similar"
BATCH_PATH = "/recommendations/batch"


@pytest.fixture
async def app(mongo_uri: str, db_name: str, store: MongoServingStore) -> AsyncIterator[FastAPI]:
    write_payload_version(store.db, make_payload("v1", top_n=TOP, attributes=True))
    store.activate("v1")
    settings = Settings(mongodb_uri=mongo_uri, mongodb_db=db_name, top_n=TOP,
                        similar_n=SIMILAR, api_batch_max_users=BATCH, api_keys=KEY,
                        api_log_json=False)
    application = create_app(settings)
    async with LifespanManager(application):
        yield application


@pytest.fixture
async def client(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://t",
                                 headers={"X-API-Key": KEY}) as c:
        yield c


def _param(spec: dict, path: str, name: str) -> dict[str, Any]:
    params = spec["paths"][path]["get"]["parameters"]
    return next(p for p in params if p["name"] == name)


def _integer(schema: dict[str, Any]) -> dict[str, Any]:
    """The integer branch of an optional integer (`anyOf: [integer, null]`)."""
    if schema.get("type") == "integer":
        return schema
    return next(s for s in schema["anyOf"] if s.get("type") == "integer")


def _array_items(schema: dict[str, Any]) -> dict[str, Any]:
    array = schema if schema.get("type") == "array" else next(
        s for s in schema["anyOf"] if s.get("type") == "array")
    return array["items"]


async def test_filter_format_is_in_the_schema(app: FastAPI, client: httpx.AsyncClient) -> None:
    spec = app.openapi()
    batch = spec["components"]["schemas"]["BatchRecommendationsRequest"]["properties"]
    for schema in (_param(spec, REC, "filter")["schema"], _param(spec, SIM, "filter")["schema"],
                   batch["filter"]):
        assert _array_items(schema)["pattern"] == "^[^:]+:.+$"
    assert (await client.get("/users/u1/recommendations",
                             params={"filter": "genres:Comedy"})).status_code == 200
    for bad in ("genres", ":Comedy", "genres:"):
        r = await client.get("/users/u1/recommendations", params={"filter": bad})
        assert r.status_code == 422, bad


async def test_k_and_offset_bounds_are_in_the_schema(app: FastAPI,
                                                     client: httpx.AsyncClient) -> None:
    spec = app.openapi()
    batch = spec["components"]["schemas"]["BatchRecommendationsRequest"]["properties"]
    assert _integer(batch["k"])["maximum"] == TOP and _integer(batch["k"])["minimum"] == 1
    assert batch["offset"]["maximum"] == TOP
    assert batch["user_ids"]["maxItems"] == BATCH
    assert _integer(_param(spec, REC, "k")["schema"])["maximum"] == TOP
    assert _integer(_param(spec, SIM, "k")["schema"])["maximum"] == SIMILAR
    assert _param(spec, SIM, "offset")["schema"]["maximum"] == SIMILAR

    ok = await client.post(BATCH_PATH, json={"user_ids": ["u1"], "k": TOP, "offset": TOP})
    over_k = await client.post(BATCH_PATH, json={"user_ids": ["u1"], "k": TOP + 1})
    over_offset = await client.post(BATCH_PATH, json={"user_ids": ["u1"], "offset": TOP + 1})
    over_users = await client.post(BATCH_PATH, json={"user_ids": ["u1"] * (BATCH + 1)})
    assert ok.status_code == 200
    assert [r.status_code for r in (over_k, over_offset, over_users)] == [422, 422, 422]
    assert over_k.json()["detail"][0]["loc"] == ["body", "k"]


async def test_error_answers_are_in_the_schema(app: FastAPI, client: httpx.AsyncClient) -> None:
    spec = app.openapi()
    keyed = [(REC, "get"), (SIM, "get"), ("/users/{user_id}/embedding", "get"),
             ("/items/{item_id}/embedding", "get"), (BATCH_PATH, "post"), ("/ready", "get"),
             ("/metrics", "get"), ("/admin/versions", "get"), ("/admin/active-version", "post")]
    for path, method in keyed:
        responses = spec["paths"][path][method]["responses"]
        assert {"401", "429"} <= set(responses), (path, responses.keys())
    for path in (BATCH_PATH, "/admin/active-version"):
        assert {"400", "413", "422"} <= set(spec["paths"][path]["post"]["responses"]), path
    assert "403" in spec["paths"]["/admin/versions"]["get"]["responses"]

    no_key = await client.get("/users/u1/recommendations", headers={"X-API-Key": ""})
    assert no_key.status_code == 401
    broken = await client.post(BATCH_PATH, content=b"\xff\xfe not json",
                               headers={"content-type": "application/json"})
    assert broken.status_code in (400, 422)


@pytest.mark.parametrize(("method", "path", "allow"), [
    ("POST", "/health", {"GET", "HEAD"}),
    ("DELETE", "/users/u1/recommendations", {"GET"}),
    ("GET", BATCH_PATH, {"POST"}),
    ("PUT", "/admin/active-version", {"POST"}),
])
async def test_405_names_the_allowed_methods(client: httpx.AsyncClient, method: str, path: str,
                                             allow: set[str]) -> None:
    r = await client.request(method, path)
    assert r.status_code == 405
    assert {m.strip() for m in r.headers["Allow"].split(",")} == allow
    assert r.json() == {"detail": "Method Not Allowed"}


async def test_head_health(app: FastAPI, client: httpx.AsyncClient) -> None:
    r = await client.head("/health")
    assert r.status_code == 200 and r.content == b""
    assert "head" in app.openapi()["paths"]["/health"]
