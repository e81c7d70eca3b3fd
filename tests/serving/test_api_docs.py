"""Regression (issue 16): the API's docs work offline and say everything; one request id.

Before the fix `/docs` and `/redoc` loaded Swagger UI and ReDoc from a CDN (blank offline); the
embeddings, health, ready, metrics and admin routes had no description and no model an
example; and an unexpected error (500) was answered with `X-Request-ID: -` instead of the
request's id.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from asgi_lifespan import LifespanManager
from fastapi import APIRouter, FastAPI

from recsys.settings import Settings
from serving.api.main import create_app
from serving.store import MongoServingStore
from serving.version_writer import write_payload_version
from tests.serving.payloads import make_payload

pytestmark = [pytest.mark.integration, pytest.mark.anyio]

KEY, ADMIN = "user-key-1", "admin-key-1"
_REFERENCE = re.compile(r"""(?:src|href)\s*=\s*["']([^"']+)["']""", re.I)
_URL_IN_JS = re.compile(r"""(?:url|redoc_js_url|spec-url)\s*[:=(]\s*['"]([^'"]+)['"]""", re.I)
# FastAPI's own models of a 422 body; every model of ours carries an example
_FASTAPI_SCHEMAS = {"HTTPValidationError", "ValidationError"}


@pytest.fixture
async def app(mongo_uri: str, db_name: str, store: MongoServingStore) -> AsyncIterator[FastAPI]:
    write_payload_version(store.db, make_payload("v1"))
    store.activate("v1")
    settings = Settings(mongodb_uri=mongo_uri, mongodb_db=db_name, api_keys=KEY,
                        admin_api_keys=ADMIN, api_log_json=False)
    application = create_app(settings)
    broken = APIRouter()

    @broken.get("/test-only/boom", include_in_schema=False)
    async def boom() -> None:
        raise RuntimeError("a bug")

    application.include_router(broken)
    async with LifespanManager(application):
        yield application


@pytest.fixture
async def client(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as c:
        yield c


def _references(html: str) -> list[str]:
    return _REFERENCE.findall(html) + _URL_IN_JS.findall(html)


@pytest.mark.parametrize("page", ["/docs", "/redoc"])
async def test_docs_load_only_assets_the_app_serves(client: httpx.AsyncClient, page: str) -> None:
    r = await client.get(page)  # no key: the docs hold no data
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/html")
    refs = _references(r.text)
    assert refs, r.text
    external = [u for u in refs if re.match(r"(?i)(https?:)?//", u)]
    assert not external, external
    assert "https://" not in r.text and "http://" not in r.text
    assert "/openapi.json" in refs
    kinds = {".js": "javascript", ".css": "text/css", ".png": "image/png"}
    assets = [u for u in refs if u.startswith("/assets/")]
    assert any(u.endswith(".js") for u in assets), refs
    for url in assets:
        asset = await client.get(url)
        assert asset.status_code == 200, url
        kind = next(v for k, v in kinds.items() if url.endswith(k))
        assert kind in asset.headers["content-type"], (url, asset.headers["content-type"])
        assert len(asset.content) > 1000, url


async def test_swagger_oauth2_redirect_page_is_served(client: httpx.AsyncClient) -> None:
    r = await client.get("/docs/oauth2-redirect")
    assert r.status_code == 200 and "oauth2" in r.text.lower()


def _operations(spec: dict[str, Any]) -> list[tuple[str, str, dict[str, Any]]]:
    return [(path, method, op) for path, item in spec["paths"].items()
            for method, op in item.items()]


async def test_every_route_has_a_summary_and_a_description(app: FastAPI) -> None:
    missing = [(path, method) for path, method, op in _operations(app.openapi())
               if not op.get("summary") or not op.get("description")]
    assert not missing, missing


async def test_every_model_has_an_example(app: FastAPI) -> None:
    schemas = app.openapi()["components"]["schemas"]
    missing = [name for name, schema in schemas.items()
               if name not in _FASTAPI_SCHEMAS and not schema.get("examples")]
    assert not missing, missing
    example = schemas["UserRecommendationsPublic"]["examples"][0]
    assert example["items"][0]["rank"] == 1 and example["source"] == "personalized"


async def test_error_answers_have_an_example(app: FastAPI) -> None:
    for path, method, op in _operations(app.openapi()):
        for status, response in op["responses"].items():
            if status in ("401", "403", "429"):
                example = response["content"]["application/json"]["example"]
                assert example["detail"], (path, method, status)


def _concrete(path: str) -> str:
    """A path template with every parameter filled in (`{path:path}` included)."""
    return re.sub(r"\{[^}]+\}", "x1", path)


async def test_401_403_429_documented_wherever_they_can_happen(
        app: FastAPI, client: httpx.AsyncClient) -> None:
    """Every operation is called without a key and with a non-admin key: where that is refused
    (401, or 429 once failed authentications from this address pile up), 401 and 429 must be
    documented; where the user key gets 403, 403 too."""
    checked = 0
    for path, method, op in _operations(app.openapi()):
        url, verb = _concrete(path), method.upper()
        body = b"{}" if verb in ("POST", "PUT", "PATCH") else None
        headers = {"content-type": "application/json"}
        anonymous = await client.request(verb, url, content=body, headers=headers)
        documented = set(op["responses"])
        if anonymous.status_code in (401, 429):
            assert {"401", "429"} <= documented, (verb, path, sorted(documented))
            checked += 1
        user = await client.request(verb, url, content=body, headers={**headers, "X-API-Key": KEY})
        if user.status_code == 403:
            assert "403" in documented, (verb, path, sorted(documented))
    assert checked >= 9  # recommendations, batch, similar, embeddings, ready, metrics, admin


@pytest.mark.parametrize(("method", "path", "body", "status"), [
    ("GET", "/no/such/route", None, 404),
    ("GET", "/items/unknown-item/similar", None, 404),
    ("GET", "/users/u1/recommendations?k=abc", None, 422),
    ("POST", "/recommendations/batch", b"[" + b" " * 300_000 + b"]", 413),
    ("GET", "/test-only/boom", None, 500),
    ("GET", "/admin/versions", None, 403),
])
async def test_one_request_id_per_answer(client: httpx.AsyncClient, method: str, path: str,
                                         body: bytes | None, status: int) -> None:
    headers = {"X-API-Key": KEY, "X-Request-ID": "req-16", "content-type": "application/json"}
    r = await client.request(method, path, content=body, headers=headers)
    assert r.status_code == status, r.text
    assert r.headers.get_list("x-request-id") == ["req-16"]
    assert "detail" in r.json()
    fresh = await client.request(method, path, content=body, headers={"X-API-Key": KEY})
    ids = fresh.headers.get_list("x-request-id")
    assert len(ids) == 1 and re.fullmatch(r"[0-9a-f]{32}", ids[0]), ids


async def test_unexpected_error_is_a_json_500_and_counted(client: httpx.AsyncClient) -> None:
    r = await client.get("/test-only/boom", headers={"X-API-Key": KEY})
    assert r.status_code == 500 and r.json() == {"detail": "internal error"}
    metrics = (await client.get("/metrics", headers={"X-API-Key": KEY})).text
    assert 'recsys_http_requests_total{method="GET",route="/test-only/boom",status="500"} 1.0' \
        in metrics
