"""Regression (issue 13): ids are validated by one rule everywhere, and a bad one is a 422.

Before the fix, a lone surrogate in a batch body (``{"user_ids":["\\ud800"]}``) reached pymongo
and came back as a 500 (UnicodeEncodeError); path and query ids had no rule at all.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest
from asgi_lifespan import LifespanManager

from recsys.settings import Settings
from serving.api.ids import MAX_ENTITY_ID_CHARS
from serving.api.main import create_app
from serving.store import MongoServingStore
from serving.version_writer import write_payload_version
from tests.serving.payloads import SIMILAR_N, TOP_N, make_payload

pytestmark = [pytest.mark.integration, pytest.mark.anyio]

ADMIN = "admin-key-1"
SURROGATE_BODY = b'{"user_ids": ["u1", "\\ud800"]}'
LONG = "u" * (MAX_ENTITY_ID_CHARS + 1)


@pytest.fixture
async def client(mongo_uri: str, db_name: str, store: MongoServingStore
                 ) -> AsyncIterator[httpx.AsyncClient]:
    write_payload_version(store.db, make_payload("v1", attributes=True))
    store.activate("v1")
    settings = Settings(mongodb_uri=mongo_uri, mongodb_db=db_name, top_n=TOP_N,
                        similar_n=SIMILAR_N, active_poll_seconds=0.05,
                        api_rate_limit_per_second=0, api_log_json=False, admin_api_keys=ADMIN)
    app = create_app(settings)
    async with LifespanManager(app) as manager:
        transport = httpx.ASGITransport(app=manager.app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as c:
            yield c


def _assert_422(response: httpx.Response, loc: list) -> None:
    assert response.status_code == 422, (response.status_code, response.text)
    assert response.headers["content-type"] == "application/json"
    assert len(response.headers.get_list("x-request-id")) == 1
    detail = response.json()["detail"]
    assert detail[0]["loc"] == loc, detail
    assert "id" in detail[0]["msg"] and "Unicode" in detail[0]["msg"], detail


async def test_lone_surrogate_in_batch_body_is_422(client: httpx.AsyncClient) -> None:
    r = await client.post("/recommendations/batch", content=SURROGATE_BODY,
                          headers={"content-type": "application/json"})
    _assert_422(r, ["body", "user_ids", 1])


async def test_lone_surrogate_in_batch_exclude_is_422(client: httpx.AsyncClient) -> None:
    r = await client.post("/recommendations/batch",
                          content=b'{"user_ids": ["u1"], "exclude": ["\\udfff"]}',
                          headers={"content-type": "application/json"})
    _assert_422(r, ["body", "exclude", 0])


@pytest.mark.parametrize("path", [
    "/users/{}/recommendations", "/users/{}/embedding", "/items/{}/similar", "/items/{}/embedding",
])
@pytest.mark.parametrize("bad", ["bad%0Aid", "%00", LONG])
async def test_bad_path_ids_are_422(client: httpx.AsyncClient, path: str, bad: str) -> None:
    r = await client.get(path.format(bad))
    name = "user_id" if path.startswith("/users") else "item_id"
    _assert_422(r, ["path", name])


async def test_bad_ids_in_query_and_body_lists_are_422(client: httpx.AsyncClient) -> None:
    q = await client.get("/users/u1/recommendations", params={"exclude": "i1,bad\x07id"})
    _assert_422(q, ["query", "exclude"])
    s = await client.get("/items/i1/similar", params={"exclude": LONG})
    _assert_422(s, ["query", "exclude"])
    b = await client.post("/recommendations/batch", json={"user_ids": ["u1", "x\ty"]})
    _assert_422(b, ["body", "user_ids", 1])
    e = await client.post("/recommendations/batch", json={"user_ids": [""]})
    _assert_422(e, ["body", "user_ids", 0])


async def test_admin_version_uses_the_version_rule(client: httpx.AsyncClient) -> None:
    headers = {"X-API-Key": ADMIN, "content-type": "application/json"}
    for body in (b'{"version": "\\ud800"}', b'{"version": "../v1"}', b'{"version": ""}'):
        r = await client.post("/admin/active-version", content=body, headers=headers)
        assert r.status_code == 422, (body, r.text)
        detail = r.json()["detail"]
        assert detail[0]["loc"] == ["body", "version"] and "model version" in detail[0]["msg"]


async def test_good_ids_still_work(client: httpx.AsyncClient) -> None:
    unicode_id = "usér-ü 1"  # unknown, but a legal id: popular list
    r = await client.get(f"/users/{unicode_id}/recommendations")
    assert r.status_code == 200 and r.json()["user_id"] == unicode_id
    b = await client.post("/recommendations/batch",
                          json={"user_ids": ["u1", unicode_id], "exclude": ["i1", "i2,i3"]})
    assert b.status_code == 200, b.text
    assert [x["source"] for x in b.json()["results"]] == ["personalized", "popular"]
    assert (await client.get("/items/i1/similar", params={"exclude": "i2,i3"})).status_code == 200
