"""Stage `publish`: `serving.publish.publish_model` beside bare `insert_many` of the same documents.

Ours is the one publish path the flow calls: under the publish lock it writes the model version
from the registry's artifacts, verifies it, writes the model's feature snapshot to the online
store, switches both pointers and prunes.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from pymongo import MongoClient

from bench.publish import bare_insert
from bench.workspace import DB_NAME, RUN_ID, Size, bench_settings, phase_main
from serving.artifacts import payload_for_version
from serving.publish import publish_model

BARE_DB = DB_NAME + "_bare"


def baseline(work: Path, size: Size, uri: str) -> dict[str, Any]:
    """`insert_many(ordered=False)` of the documents publish writes, built untimed."""
    settings = bench_settings(work, uri)
    payload = payload_for_version(settings, RUN_ID)
    client: MongoClient = MongoClient(uri, tz_aware=True)
    try:
        client.drop_database(BARE_DB)
        seconds, documents = bare_insert(client[BARE_DB], payload, settings.publish_batch_size)
        client.drop_database(BARE_DB)
    finally:
        client.close()
    return {"seconds": seconds, "documents": documents}


def ours(work: Path, size: Size, uri: str) -> dict[str, Any]:
    """`publish_model`: write, verify, online features, switch, prune."""
    settings = bench_settings(work, uri)
    client: MongoClient = MongoClient(uri)
    try:
        client.drop_database(DB_NAME)  # a fresh database: the run's version must not be active
    finally:
        client.close()
    started = time.perf_counter()
    result = publish_model(settings, RUN_ID)
    return {"seconds": time.perf_counter() - started, "counts": result.counts,
            "active_version": result.version, "online_switched": result.online_switched}


PHASES = {"baseline": baseline, "ours": ours}

if __name__ == "__main__":
    phase_main(PHASES)
