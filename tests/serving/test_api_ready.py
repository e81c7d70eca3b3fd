"""Regression (issue 13): `/ready` during a MongoDB outage says so in plain words.

Before the fix its 503 body carried the driver's topology description (hosts, ports, internal
state). Now the body is "MongoDB unreachable" and the detail goes to the log.
"""

from __future__ import annotations

import logging

import httpx
import pytest
from asgi_lifespan import LifespanManager

from recsys.settings import Settings
from serving.api.main import create_app

pytestmark = [pytest.mark.integration, pytest.mark.anyio]

DEAD = "mongodb://127.0.0.1:1"


async def test_ready_hides_the_topology(caplog: pytest.LogCaptureFixture) -> None:
    settings = Settings(mongodb_uri=DEAD, mongodb_db="nothing", mongodb_timeout_ms=200,
                        api_log_json=False)
    app = create_app(settings)
    with caplog.at_level(logging.WARNING, logger="serving"):
        async with LifespanManager(app) as manager:
            transport = httpx.ASGITransport(app=manager.app)
            async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
                r = await client.get("/ready")
    assert r.status_code == 503 and "Retry-After" in r.headers
    assert r.json() == {"detail": "MongoDB unreachable"}
    logged = [rec.getMessage() for rec in caplog.records if "/ready" in rec.getMessage()]
    assert logged and "127.0.0.1:1" in logged[0]  # the detail is in the log, not the answer
