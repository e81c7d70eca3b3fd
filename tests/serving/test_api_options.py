"""Query options, batch lookups, auth, limits, admin switch, metrics and logs of the API."""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import httpx
import pytest
from asgi_lifespan import LifespanManager

from recsys.settings import Settings
from serving.api.logs import JsonFormatter
from serving.api.main import create_app
from serving.store import MongoServingStore
from serving.version_writer import write_payload_version
from tests.serving.payloads import N_ITEMS, SIMILAR_N, TOP_N, item_genres, make_payload

pytestmark = [pytest.mark.integration, pytest.mark.anyio]

KEY, ADMIN = "user-key-1", "admin-key-1"


@pytest.fixture
def settings(mongo_uri: str, db_name: str, tmp_path) -> Settings:
    return Settings(mongodb_uri=mongo_uri, mongodb_db=db_name, data_dir=tmp_path,
                    top_n=TOP_N, similar_n=SIMILAR_N,
                    active_poll_seconds=0.05, mongodb_timeout_ms=3000,
                    api_rate_limit_per_second=0, api_log_json=False)


@pytest.fixture
def api(settings: Settings):
    @asynccontextmanager
    async def open_client(s: Settings = settings, **update) -> AsyncIterator[httpx.AsyncClient]:
        app = create_app(s.model_copy(update=update))
        async with LifespanManager(app) as manager:
            transport = httpx.ASGITransport(app=manager.app)
            async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
                client.app = app  # type: ignore[attr-defined]
                yield client
    return open_client


@pytest.fixture
def published(store: MongoServingStore):
    write_payload_version(store.db, make_payload("v1", attributes=True, explain=True))
    store.activate("v1")
    write_payload_version(store.db, make_payload("v2", seed=1))  # kept, not active, no attributes
    return store


def ids(body: dict) -> list[str]:
    return [it["item_id"] for it in body["items"]]


async def test_pagination_exclude_and_genre_filter(api, published) -> None:
    async with api() as client:
        page1 = (await client.get("/users/u0/recommendations", params={"k": 2})).json()
        page2 = (await client.get("/users/u0/recommendations",
                                  params={"k": 2, "offset": page1["next_offset"]})).json()
        last = (await client.get("/users/u0/recommendations",
                                 params={"k": 2, "offset": 4})).json()
        excl = (await client.get("/users/u0/recommendations",
                                 params=[("exclude", "i1,i2"), ("exclude", "i3"), ("k", 5)])).json()
        comedy = (await client.get("/users/u0/recommendations",
                                   params={"genre": "Comedy", "k": 5})).json()
        drama = (await client.get("/users/u0/recommendations",
                                  params={"filter": "genres:Drama", "k": 5})).json()
        pop = (await client.get("/users/nobody/recommendations",
                                params={"genre": "Horror", "k": 2})).json()
        sim = (await client.get("/items/i0/similar", params={"genre": "Comedy"})).json()
    assert ids(page1) == ["i0", "i1"] and page1["next_offset"] == 2 and page1["total"] == TOP_N
    assert ids(page2) == ["i2", "i3"] and page2["offset"] == 2
    assert ids(last) == ["i4"] and last["next_offset"] is None
    assert ids(excl) == ["i0", "i4"] and excl["total"] == 2
    want_comedy = [f"i{j}" for j in range(TOP_N) if "Comedy" in item_genres(j)]
    assert ids(comedy) == want_comedy
    assert all("Comedy" in it["genres"] for it in comedy["items"])
    assert ids(drama) == [f"i{j}" for j in range(TOP_N) if "Drama" in item_genres(j)]
    assert [it["rank"] for it in comedy["items"]] == [int(i[1:]) + 1 for i in want_comedy]
    assert pop["source"] == "popular" and all("Horror" in it["genres"] for it in pop["items"])
    assert sim["items"] and all("Comedy" in it["genres"] for it in sim["items"])
    assert "because" not in json.dumps(page1)


async def test_explain(api, published) -> None:
    async with api() as client:
        body = (await client.get("/users/u2/recommendations",
                                 params={"explain": "true", "k": 1})).json()
    assert body["items"][0]["because"] == [
        {"item_id": f"i{9 % N_ITEMS}", "contribution": 0.5},
        {"item_id": f"i{10 % N_ITEMS}", "contribution": 0.25},
    ]


@pytest.mark.parametrize("params", [
    {"offset": "-1"}, {"offset": str(TOP_N + 1)}, {"filter": "genres"}, {"filter": "color:red"},
    {"explain": "maybe"}, {"k": "1e3"},
])
async def test_bad_options_are_422_json(api, published, params) -> None:
    async with api() as client:
        r = await client.get("/users/u0/recommendations", params=params)
    assert r.status_code == 422, r.text
    assert r.headers["content-type"] == "application/json"
    assert isinstance(r.json()["detail"], list) and r.json()["detail"][0]["msg"]


async def test_batch(api, published) -> None:
    async with api() as client:
        r = await client.post("/recommendations/batch",
                              json={"user_ids": ["u1", "nobody", "u1", "u3"], "k": 2,
                                    "exclude": ["i1"]})
        too_many = await client.post("/recommendations/batch",
                                     json={"user_ids": [f"u{i}" for i in range(1001)]})
        empty = await client.post("/recommendations/batch", json={"user_ids": []})
        extra = await client.post("/recommendations/batch", json={"user_ids": ["u1"], "x": 1})
        garbage = await client.post("/recommendations/batch", content=b"{not json",
                                    headers={"content-type": "application/json"})
        bad_filter = await client.post("/recommendations/batch",
                                       json={"user_ids": ["u1"], "filter": ["nope:1"]})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["model_version"] == "v1"
    assert [x["user_id"] for x in body["results"]] == ["u1", "nobody", "u1", "u3"]
    assert ids(body["results"][0]) == ["i2", "i3"]
    assert body["results"][1]["source"] == "popular"
    assert ids(body["results"][3]) == ["i3", "i4"]
    for bad in (too_many, empty, extra, garbage, bad_filter):
        assert bad.status_code == 422, bad.text
        assert bad.headers["content-type"] == "application/json"


async def test_request_size_limit(api, published) -> None:
    async with api(api_max_body_bytes=2048) as client:
        r = await client.post("/recommendations/batch",
                              json={"user_ids": [f"user-{i:06d}" for i in range(500)]})

        async def chunks():  # no content-length: counted while streaming
            for _ in range(10):
                yield b" " * 1000

        s = await client.post("/recommendations/batch", content=chunks(),
                              headers={"content-type": "application/json"})
    assert r.status_code == 413 and "2048" in r.json()["detail"]
    assert s.status_code == 413


async def test_api_keys(api, published) -> None:
    async with api(api_keys=f"{KEY}, other", admin_api_keys=ADMIN) as client:
        assert (await client.get("/health")).status_code == 200
        for path in ("/users/u0/recommendations", "/items/i0/similar", "/users/u0/embedding",
                     "/ready", "/metrics"):
            missing = await client.get(path)
            wrong = await client.get(path, headers={"X-API-Key": "nope"})
            ok = await client.get(path, headers={"X-API-Key": KEY})
            assert missing.status_code == 401 and wrong.status_code == 401, path
            assert missing.json()["detail"].startswith("missing X-API-Key")
            assert ok.status_code == 200, path
        as_admin = await client.get("/users/u0/recommendations", headers={"X-API-Key": ADMIN})
        assert as_admin.status_code == 200
        bad_query_no_key = await client.get("/users/u0/recommendations", params={"k": "x"})
        assert bad_query_no_key.status_code == 401  # auth before validation


async def test_admin_switch_and_rollback(api, published) -> None:
    async with api(api_keys=KEY, admin_api_keys=ADMIN) as client:
        user = await client.post("/admin/active-version", json={"version": "v2"},
                                 headers={"X-API-Key": KEY})
        anon = await client.post("/admin/active-version", json={"version": "v2"})
        assert user.status_code == 403 and anon.status_code == 401
        admin = {"X-API-Key": ADMIN}
        r = await client.post("/admin/active-version", json={"version": "v2"}, headers=admin)
        assert r.status_code == 200 and r.json() == {"active_version": "v2",
                                                      "previous_version": "v1"}
        body = (await client.get("/users/u0/recommendations", headers=admin)).json()
        assert body["model_version"] == "v2"  # this process serves it at once
        # v2 has no item attributes: a genre filter is a clear 422, not a 500
        f = await client.get("/users/u0/recommendations", params={"genre": "Comedy"},
                             headers=admin)
        assert f.status_code == 422 and "none" in f.text
        back = await client.post("/admin/active-version", json={"version": "v1"}, headers=admin)
        assert back.json()["previous_version"] == "v2"
        missing = await client.post("/admin/active-version", json={"version": "v9"},
                                    headers=admin)
        assert missing.status_code == 404
        versions = (await client.get("/admin/versions", headers=admin)).json()
        assert {v["version"]: v["active"] for v in versions} == {"v1": True, "v2": False}
    assert published.active_version() == "v1"
    async with api() as client:  # no admin keys configured: admin is disabled
        r = await client.post("/admin/active-version", json={"version": "v2"})
        assert r.status_code == 403


async def test_rate_limit(api, published) -> None:
    async with api(api_rate_limit_per_second=1, api_rate_limit_burst=3) as client:
        codes = [(await client.get("/users/u0/recommendations")).status_code for _ in range(5)]
        r = await client.get("/users/u0/recommendations")
        # no keys configured: an unvalidated header does not name a bucket (issue 13)
        other = await client.get("/users/u0/recommendations", headers={"X-API-Key": "k2"})
        health = await client.get("/health")
    assert codes[:3] == [200, 200, 200] and codes[3:] == [429, 429]
    assert r.status_code == 429 and int(r.headers["Retry-After"]) >= 1
    assert other.status_code == 429  # per-caller buckets: see test_api_rate_limit.py
    assert health.status_code == 200


async def test_metrics_cache_and_request_ids(api, published) -> None:
    async with api() as client:
        for _ in range(3):
            r = await client.get("/users/u1/recommendations", headers={"X-Request-ID": "abc-1"})
        await client.get("/items/zzz/similar")
        text = (await client.get("/metrics")).text
        cache = client.app.state.services.cache
        assert len(cache) >= 1
    assert r.headers["X-Request-ID"] == "abc-1"
    assert ('recsys_http_requests_total{method="GET",route="/users/{user_id}/recommendations",'
            'status="200"} 3.0') in text
    assert 'route="/items/{item_id}/similar",status="404"' in text
    assert "recsys_http_request_duration_seconds_bucket" in text
    assert 'recsys_cache_requests_total{result="hit"} 2.0' in text
    assert 'recsys_cache_requests_total{result="miss"} 2.0' in text
    assert 'recsys_active_model_version_info{version="v1"} 1.0' in text
    assert "recsys_mongodb_errors_total" in text


async def test_cache_is_dropped_on_switch(api, published) -> None:
    async with api() as client:
        await client.get("/users/u1/recommendations")
        services = client.app.state.services
        assert len(services.cache) == 1
        published.activate("v2")
        await services.active.refresh()
        assert len(services.cache) == 0
        body = (await client.get("/users/u1/recommendations")).json()
    assert body["model_version"] == "v2"


def test_json_log_lines_carry_request_id() -> None:
    from serving.api.logs import request_id_var

    token = request_id_var.set("rid-7")
    try:
        record = logging.makeLogRecord({"name": "serving.x", "levelname": "INFO",
                                        "msg": "hello %s", "args": ("w",), "status": 200})
        line = json.loads(JsonFormatter().format(record))
    finally:
        request_id_var.reset(token)
    assert line["msg"] == "hello w" and line["request_id"] == "rid-7" and line["status"] == 200
    assert line["level"] == "INFO" and line["ts"].endswith("+00:00")


def test_json_logging_is_scoped() -> None:
    from serving.api.logs import json_logging

    root = logging.getLogger("serving")
    before = (list(root.handlers), root.propagate)
    with json_logging():
        assert any(isinstance(h.formatter, JsonFormatter) for h in root.handlers)
        assert root.propagate is False
    assert (list(root.handlers), root.propagate) == before


async def test_access_log_only_when_asked(api, published, caplog) -> None:
    """One line per request costs throughput: off by default, on with RECSYS_API_ACCESS_LOG."""
    with caplog.at_level(logging.INFO, logger="serving.api.access"):
        async with api() as client:
            await client.get("/users/u0/recommendations")
        assert not [r for r in caplog.records if r.name == "serving.api.access"]
        async with api(api_access_log=True) as client:
            await client.get("/users/u0/recommendations", headers={"X-Request-ID": "log-1"})
    lines = [r for r in caplog.records if r.name == "serving.api.access"]
    assert len(lines) == 1 and lines[0].status == 200
    assert lines[0].route == "/users/{user_id}/recommendations"
