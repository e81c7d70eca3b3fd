"""Regression (issues 13 and 14): the rate limit cannot be bypassed, guesses are throttled, and the
limit is per API key and off by default.

Before the fix the bucket was keyed on the unvalidated `X-API-Key` header (a fresh random header
per request bypassed the limit when no keys were configured), wrong keys were refused before the
limiter and never throttled, and the default limit (1,000 req/s per client IP) throttled every
client behind one gateway.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import httpx
import pytest
from asgi_lifespan import LifespanManager
from fastapi import FastAPI

from recsys.settings import Settings
from serving.api.main import create_app
from serving.api.security import AUTH_FAILURE_BURST, TokenBucketLimiter
from serving.store import MongoServingStore
from serving.version_writer import write_payload_version
from tests.serving.payloads import SIMILAR_N, TOP_N, make_payload

pytestmark = [pytest.mark.integration, pytest.mark.anyio]

KEY, KEY2, ADMIN = "user-key-1", "user-key-2", "admin-key-1"
PATH = "/users/u0/recommendations"


@pytest.fixture
def base(mongo_uri: str, db_name: str, store: MongoServingStore) -> Settings:
    write_payload_version(store.db, make_payload("v1"))
    store.activate("v1")
    return Settings(mongodb_uri=mongo_uri, mongodb_db=db_name, top_n=TOP_N, similar_n=SIMILAR_N,
                    api_log_json=False)


@asynccontextmanager
async def _app(settings: Settings) -> AsyncIterator[FastAPI]:
    app = create_app(settings)
    async with LifespanManager(app):
        yield app  # its services live on app.state, so requests may go to the app itself


def _client(app: FastAPI, address: str = "10.0.0.1") -> httpx.AsyncClient:
    transport = httpx.ASGITransport(app=app, client=(address, 40000))
    return httpx.AsyncClient(transport=transport, base_url="http://test")


async def test_off_by_default(base: Settings) -> None:
    assert Settings.model_fields["api_rate_limit_per_second"].default == 0
    async with _app(base) as app, _client(app) as client:
        codes = {(await client.get(PATH)).status_code for _ in range(60)}
    assert codes == {200}


async def test_fresh_random_keys_do_not_bypass_the_limit(base: Settings) -> None:
    limited = base.model_copy(update={"api_rate_limit_per_second": 0.5,
                                      "api_rate_limit_burst": 3})
    async with _app(limited) as app, _client(app) as client, _client(app, "10.0.0.2") as other:
        codes = [(await client.get(PATH, headers={"X-API-Key": uuid.uuid4().hex})).status_code
                 for _ in range(5)]
        elsewhere = await other.get(PATH)
    assert codes == [200, 200, 200, 429, 429]  # no keys configured: one bucket per address
    assert elsewhere.status_code == 200


async def test_limit_is_per_api_key_not_per_address(base: Settings) -> None:
    limited = base.model_copy(update={"api_rate_limit_per_second": 0.5, "api_rate_limit_burst": 2,
                                      "api_keys": f"{KEY},{KEY2}"})
    async with _app(limited) as app, _client(app) as client:  # one gateway address for all
        first = [(await client.get(PATH, headers={"X-API-Key": KEY})).status_code
                 for _ in range(3)]
        second = (await client.get(PATH, headers={"X-API-Key": KEY2})).status_code
        refused = await client.get(PATH, headers={"X-API-Key": KEY})
    assert first == [200, 200, 429] and second == 200
    assert int(refused.headers["Retry-After"]) >= 1


async def test_wrong_key_guesses_are_throttled_per_address(base: Settings) -> None:
    keyed = base.model_copy(update={"api_keys": KEY, "admin_api_keys": ADMIN})
    async with _app(keyed) as app, _client(app) as attacker, _client(app, "10.0.0.9") as user:
        # the real burst, a slower refill: the test must not depend on its own speed
        app.state.auth_failures = TokenBucketLimiter(0.01, AUTH_FAILURE_BURST)
        guesses = [(await attacker.get(PATH, headers={"X-API-Key": f"guess-{i}"})).status_code
                   for i in range(AUTH_FAILURE_BURST + 5)]
        admin_guess = await attacker.get("/admin/versions", headers={"X-API-Key": "guess"})
        after = await attacker.get(PATH, headers={"X-API-Key": KEY})
        ok = await user.get(PATH, headers={"X-API-Key": KEY})
        user_wrong = await user.get(PATH, headers={"X-API-Key": "typo"})
        missing = await user.get(PATH)
    assert guesses[:AUTH_FAILURE_BURST] == [401] * AUTH_FAILURE_BURST
    assert guesses[AUTH_FAILURE_BURST:] == [429] * 5
    assert admin_guess.status_code == 429 and "Retry-After" in admin_guess.headers
    assert after.status_code == 429  # an address that is guessing is refused before any check
    assert (ok.status_code, user_wrong.status_code, missing.status_code) == (200, 401, 401)
