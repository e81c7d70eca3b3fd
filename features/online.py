"""Online materialization: the latest user and item feature values in MongoDB, one read per id.

A materialization copies a snapshot's `user_features` and `item_features` views into two new
collections named after the snapshot, verifies them, and only then switches one pointer document
(write-then-switch): readers follow the pointer, so a partial write is never visible and a
failed one leaves the previous snapshot online. Old materializations beyond
`settings.feature_online_keep` are dropped after the switch (never the active one).

Document shapes (datetimes are UTC; ids are strings):

``feature_snapshots`` -- the registry, one document per materialized snapshot::

    {_id: <snapshot_id>, status: "writing" | "ready" | "dropping", as_of: datetime,
     started_at: datetime, ready_at: datetime | None,
     collections: {users: "user_features_<snapshot_id>", items: "item_features_<snapshot_id>"},
     counts: {users: int, items: int}, view_versions: {user_features: str, item_features: str}}

``feature_state`` -- the pointer, a single document::

    {_id: "online", snapshot_id: <snapshot_id>, previous: <snapshot_id> | None,
     switched_at: datetime}

``user_features_<snapshot_id>`` -- one document per user, every column of the view::

    {_id: <user_id>, snapshot_id, as_of, <user attributes, e.g. age, gender>,
     n_interactions, n_items, n_purchases, n_likes, n_recent, active_days, mean_rating,
     rating_std, first_ts, last_ts, days_since_last,
     genre_affinity: [{genre: str, fraction: float}, ...]}

``item_features_<snapshot_id>`` -- one document per item::

    {_id: <item_id>, snapshot_id, as_of, title, genres: [str], release_year, <other attributes>,
     n_interactions, n_users, n_recent_users, mean_rating, rating_std, first_ts, last_ts,
     popularity_rank, trending_rank, age_days, age_years}

Nulls (e.g. `mean_rating` of a user without ratings) are stored as `null`.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Iterable, Iterator
from datetime import UTC, datetime
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
from pymongo import ReturnDocument
from pymongo.database import Database

from features.snapshot import Manifest
from recsys.errors import FeatureStoreError
from recsys.settings import Settings

log = logging.getLogger(__name__)

REGISTRY_COLLECTION = "feature_snapshots"
STATE_COLLECTION = "feature_state"
ONLINE_ID = "online"
ENTITY_VIEWS = {"users": ("user_features", "user_id"), "items": ("item_features", "item_id")}
_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.=-]{0,99}$")


def feature_collection(entity: str, snapshot_id: str) -> str:
    """Collection name of an entity's features for a snapshot ("users" or "items")."""
    if entity not in ENTITY_VIEWS:
        raise ValueError(f"unknown entity {entity!r}; expected 'users' or 'items'")
    if not _ID_RE.match(snapshot_id):
        raise FeatureStoreError(f"snapshot id {snapshot_id!r} cannot name a MongoDB collection: "
                                "use 1-100 characters from [A-Za-z0-9_.=-]")
    return f"{ENTITY_VIEWS[entity][0]}_{snapshot_id}"


def _documents(manifest: Manifest, entity: str, batch_size: int) -> Iterator[list[dict[str, Any]]]:
    view, key = ENTITY_VIEWS[entity]
    as_of = datetime.fromisoformat(manifest.as_of) if manifest.as_of else None
    parquet = pq.ParquetFile(manifest.view_path(view))
    for batch in parquet.iter_batches(batch_size=batch_size):
        table = pa.Table.from_batches([batch])
        names = ["_id" if n == key else n for n in table.column_names]
        table = table.rename_columns(names)
        table = table.append_column("snapshot_id", pa.array([manifest.snapshot_id] * len(table)))
        table = table.append_column("as_of", pa.array([as_of] * len(table),
                                                      type=pa.timestamp("us", tz="UTC")))
        yield table.to_pylist()


def _write(db: Database, name: str, docs: Iterable[list[dict[str, Any]]]) -> int:
    db.drop_collection(name)  # leftovers of a failed attempt
    coll = db[name]
    written = 0
    for chunk in docs:
        if chunk:
            coll.insert_many(chunk, ordered=False)
            written += len(chunk)
    return written


def materialize_into(db: Database, manifest: Manifest, *, batch_size: int = 5000,
                     keep: int = 2) -> dict[str, Any]:
    """Materialize `manifest` into `db`, switch the online pointer to it, prune old ones.

    Args:
        db: the MongoDB database.
        manifest: a snapshot with `user_features` and `item_features`.
        batch_size: documents per insert.
        keep: materialized snapshots to keep (the active one always stays).

    Returns:
        `{snapshot_id, previous, counts: {users, items}, collections, seconds, dropped,
        rewritten}`; a snapshot already materialized is not rewritten, only switched to
        (which is also how to roll back).

    Raises:
        FeatureStoreError: the snapshot lacks a view, or a written count does not match.
    """
    started = time.perf_counter()
    sid = manifest.snapshot_id
    for view, _ in ENTITY_VIEWS.values():
        if view not in manifest.views:
            raise FeatureStoreError(f"snapshot {sid} has no {view} view to materialize")
    collections = {entity: feature_collection(entity, sid) for entity in ENTITY_VIEWS}
    registry = db[REGISTRY_COLLECTION]
    existing = registry.find_one({"_id": sid, "status": "ready"})
    if existing is not None:  # already written and verified: only (re)point to it
        previous = _switch(db, sid)
        return {"snapshot_id": sid, "previous": previous, "counts": existing["counts"],
                "collections": existing["collections"], "seconds": 0.0, "dropped": [],
                "rewritten": False}
    now = datetime.now(UTC)
    registry.replace_one({"_id": sid}, {
        "_id": sid, "status": "writing", "as_of": datetime.fromisoformat(manifest.as_of)
        if manifest.as_of else None, "started_at": now, "ready_at": None,
        "collections": collections, "counts": {},
        "view_versions": {v: manifest.views[v].version for v, _ in ENTITY_VIEWS.values()},
    }, upsert=True)
    counts: dict[str, int] = {}
    try:
        for entity, name in collections.items():
            view = ENTITY_VIEWS[entity][0]
            counts[entity] = _write(db, name, _documents(manifest, entity, batch_size))
            stored = db[name].count_documents({})
            expected = manifest.views[view].rows
            if counts[entity] != expected or stored != expected:
                raise FeatureStoreError(
                    f"materializing {view} of snapshot {sid}: wrote {counts[entity]}, "
                    f"collection {name} holds {stored}, snapshot has {expected} rows; the "
                    "online snapshot is unchanged")
    except BaseException:
        if online_snapshot(db) != sid:  # never drop what readers are being served
            for name in collections.values():
                db.drop_collection(name)
            registry.delete_one({"_id": sid})
        raise
    registry.update_one({"_id": sid}, {"$set": {"status": "ready", "counts": counts,
                                                "ready_at": datetime.now(UTC)}})
    previous = _switch(db, sid)
    dropped = prune_online(db, keep=keep)
    seconds = round(time.perf_counter() - started, 3)
    log.info("online features: snapshot %s live (%s) in %.1fs; previous %s; dropped %s",
             sid, counts, seconds, previous, dropped)
    return {"snapshot_id": sid, "previous": previous, "counts": counts,
            "collections": collections, "seconds": seconds, "dropped": dropped,
            "rewritten": True}


def _switch(db: Database, sid: str) -> str | None:
    """Point the online state at `sid` (one atomic write); returns the previous snapshot."""
    before = db[STATE_COLLECTION].find_one({"_id": ONLINE_ID}) or {}
    previous = before.get("snapshot_id")
    if previous == sid:
        return before.get("previous")
    db[STATE_COLLECTION].find_one_and_update(
        {"_id": ONLINE_ID},
        {"$set": {"snapshot_id": sid, "previous": previous, "switched_at": datetime.now(UTC)}},
        upsert=True, return_document=ReturnDocument.AFTER)
    return previous


def prune_online(db: Database, *, keep: int) -> list[str]:
    """Drop materialized snapshots beyond the newest `keep` (never the online one)."""
    active = online_snapshot(db)
    registry = db[REGISTRY_COLLECTION]
    docs = list(registry.find({"status": {"$in": ["ready", "dropping"]}}))
    ready = sorted((d for d in docs if d["status"] == "ready"), key=_ready_time, reverse=True)
    kept = {d["_id"] for d in ready[:keep]} | {active}
    dropped = []
    for doc in docs:
        if doc["_id"] in kept:
            continue
        registry.update_one({"_id": doc["_id"]}, {"$set": {"status": "dropping"}})
        for name in doc.get("collections", {}).values():
            db.drop_collection(name)
        registry.delete_one({"_id": doc["_id"]})
        dropped.append(doc["_id"])
    return dropped


def _ready_time(doc: dict[str, Any]) -> float:
    ready_at = doc.get("ready_at")
    return ready_at.timestamp() if isinstance(ready_at, datetime) else 0.0


def online_snapshot(db: Database) -> str | None:
    """The snapshot id the online store serves (None before the first materialization)."""
    state = db[STATE_COLLECTION].find_one({"_id": ONLINE_ID})
    return state.get("snapshot_id") if state else None


def read_online_features(db: Database, entity: str, ids: list[str]) -> dict[str, dict[str, Any]]:
    """Feature documents of `ids` from the online snapshot ("users" or "items"): one query."""
    sid = online_snapshot(db)
    if sid is None:
        return {}
    coll = db[feature_collection(entity, sid)]
    return {doc["_id"]: doc for doc in coll.find({"_id": {"$in": list(ids)}})}


def materialize_online(manifest: Manifest, *, settings: Settings) -> dict[str, Any]:
    """Write a snapshot's latest user and item features to MongoDB and make them the online ones.

    Uses `settings.mongodb_uri` / `mongodb_db`, `publish_batch_size` documents per insert and
    keeps `feature_online_keep` materialized snapshots. See the module docstring for the
    document shapes. Returns the summary of `materialize_into`.
    """
    from serving.store import mongo_client

    client = mongo_client(settings)
    try:
        return materialize_into(client[settings.mongodb_db], manifest,
                                batch_size=settings.publish_batch_size,
                                keep=settings.feature_online_keep)
    finally:
        client.close()
