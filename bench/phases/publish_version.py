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
from pymongo.database import Database

from bench.publish import bare_insert
from bench.workspace import DB_NAME, RUN_ID, Size, bench_settings, phase_main
from features.online import ENTITY_VIEWS, snapshot_documents
from features.snapshot import load_manifest
from recsys.mongo import feature_collection
from recsys.settings import Settings
from serving.artifacts import payload_for_version
from serving.publish import publish_model

BARE_DB = DB_NAME + "_bare"


def baseline(work: Path, size: Size, uri: str) -> dict[str, Any]:
    """`insert_many(ordered=False)` of the documents publish writes, built untimed: the model
    version's serving documents and its feature snapshot's online user and item documents."""
    settings = bench_settings(work, uri)
    payload = payload_for_version(settings, RUN_ID)
    client: MongoClient = MongoClient(uri, tz_aware=True)
    try:
        client.drop_database(BARE_DB)
        seconds, documents = bare_insert(client[BARE_DB], payload, settings.publish_batch_size)
        online_seconds, online_documents = _bare_online_insert(
            client[BARE_DB], settings, payload.metadata.get("feature_snapshot"))
        client.drop_database(BARE_DB)
    finally:
        client.close()
    return {"seconds": seconds + online_seconds, "documents": documents + online_documents,
            "serving_seconds": seconds, "serving_documents": documents,
            "online_seconds": online_seconds, "online_documents": online_documents}


def _bare_online_insert(db: Database, settings: Settings, snapshot: str | None) -> tuple[float, int]:
    """Insert the snapshot's online feature documents (as publish materializes them), timing
    only the `insert_many` calls; (0, 0) when the model names no snapshot."""
    if not snapshot:
        return 0.0, 0
    manifest = load_manifest(settings.features_dir, snapshot)
    spent, inserted = 0.0, 0
    for entity in ENTITY_VIEWS:
        collection = db[feature_collection(entity, snapshot)]
        for batch in snapshot_documents(manifest, entity, settings.publish_batch_size):
            started = time.perf_counter()
            collection.insert_many(batch, ordered=False)
            spent += time.perf_counter() - started
            inserted += len(batch)
    return spent, inserted


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
