"""Hammer the API while a new version is published, activated and rolled back.

Checks the issue's promise: no 5xx, every response entirely from one version, and responses on
the new version within a second of each switch (default `active_poll_seconds`).
"""

from __future__ import annotations

import dataclasses
import random
import time

import anyio
import httpx
import numpy as np
import pytest
from asgi_lifespan import LifespanManager

from recsys.settings import Settings
from serving.api.main import create_app
from serving.payload import PublishPayload
from serving.publish import publish_model, rollback_model
from serving.store import MongoServingStore
from serving.version_writer import write_payload_version
from tests.serving.payloads import make_payload

pytestmark = [pytest.mark.integration, pytest.mark.anyio]

N_USERS, N_ITEMS, TOP = 2000, 300, 10
CLIENTS = 8
SWITCH_SLA_S = 1.0


def _payloads() -> dict[str, PublishPayload]:
    v1 = make_payload("v1", n_users=N_USERS, n_items=N_ITEMS, top_n=TOP)
    v2 = make_payload("v2", seed=1, n_users=N_USERS, n_items=N_ITEMS, top_n=TOP)
    # v2 recommends different items, so a mixed answer would be visible
    shifted = np.where(v2.rec_items >= 0, (v2.rec_items + 100) % N_ITEMS, -1).astype(np.int32)
    return {"v1": v1, "v2": dataclasses.replace(v2, rec_items=shifted)}


def _expected(payload: PublishPayload, row: int) -> list[str]:
    idx = payload.rec_items[row]
    return [f"i{i}" for i in idx[idx >= 0]]


async def test_hammer_during_publish_switch_and_rollback(
    mongo_uri: str, db_name: str, store: MongoServingStore
) -> None:
    payloads = _payloads()
    write_payload_version(store.db, payloads["v1"])
    store.activate("v1")
    settings = Settings(mongodb_uri=mongo_uri, mongodb_db=db_name, top_n=TOP,
                        api_rate_limit_per_second=0, api_log_json=False)
    assert settings.active_poll_seconds <= 0.5

    results: list[tuple[float, float, int, str | None, bool]] = []  # start, end, status, ver, ok
    switches: list[tuple[float, str]] = []
    stop = anyio.Event()

    async def hammer(client: httpx.AsyncClient, seed: int) -> None:
        rng = random.Random(seed)
        while not stop.is_set():
            row = rng.randrange(N_USERS)
            embed = rng.random() < 0.2
            path = f"/users/u{row}/{'embedding' if embed else 'recommendations'}"
            start = time.monotonic()
            r = await client.get(path, params=None if embed else {"k": TOP})
            end = time.monotonic()
            version, ok = None, False
            if r.status_code == 200:
                body = r.json()
                version = body["model_version"]
                payload = payloads[version]
                if embed:
                    ok = np.array_equal(np.array(body["vector"], dtype=np.float32),
                                        payload.user_factors[row])
                else:
                    ok = [it["item_id"] for it in body["items"]] == _expected(payload, row)
            results.append((start, end, r.status_code, version, ok))

    async def operator() -> None:
        await anyio.sleep(0.5)
        await anyio.to_thread.run_sync(
            lambda: write_payload_version(store.db, payloads["v2"], batch_size=500))
        await anyio.to_thread.run_sync(publish_model, settings, "v2")
        switches.append((time.monotonic(), "v2"))
        await anyio.sleep(2.0)
        rolled = await anyio.to_thread.run_sync(rollback_model, settings)
        assert (rolled.version, rolled.previous_version) == ("v1", "v2")
        switches.append((time.monotonic(), "v1"))
        await anyio.sleep(2.0)
        stop.set()

    app = create_app(settings)
    async with LifespanManager(app) as manager:
        transport = httpx.ASGITransport(app=manager.app)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
            with anyio.fail_after(50):
                async with anyio.create_task_group() as tg:
                    for seed in range(CLIENTS):
                        tg.start_soon(hammer, client, seed)
                    tg.start_soon(operator)

    assert len(results) > 200, f"only {len(results)} requests"
    statuses = {s for _, _, s, _, _ in results}
    assert statuses == {200}, statuses
    assert all(ok for *_, ok in results), "a response mixed versions or had wrong data"
    # after each switch (+ SLA), until the next one, every answer comes from the new version
    bounds = [*switches[1:], (float("inf"), "")]
    for (at, version), (next_at, _) in zip(switches, bounds, strict=True):
        late = [v for start, _, _, v, _ in results if at + SWITCH_SLA_S <= start < next_at]
        assert late, f"no requests after the switch to {version}"
        assert set(late) == {version}, f"old version served > {SWITCH_SLA_S}s after switch"
        before = [v for _, end, _, v, _ in results if end < at]
        assert before and set(before) <= {"v1", "v2"}
