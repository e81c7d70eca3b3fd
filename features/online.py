"""The online feature store: the latest user and item feature values in MongoDB, one read per id.

A materialization copies a snapshot's `user_features` and `item_features` views into two new
collections named after the snapshot, verifies them, marks the snapshot ready, and only then
switches one pointer document (write-then-switch, `recsys/versions.py`, the same primitive as
the serving store): readers follow the pointer, so a partial write is never visible and a failed
one leaves the previous snapshot online. Collection names come from `recsys/mongo.py`.

`serving.publish.publish_model` writes a model's snapshot here (`write_snapshot`) and switches to
it together with the model (`switch_online`); nothing else switches the online store.
`recsys features materialize` only writes a snapshot ahead of time (under the publish lock).

Document shapes (datetimes are UTC; ids are strings):

``feature_snapshots`` -- the registry, one document per materialized snapshot::

    {_id: <snapshot_id>, status: "building" | "ready" | "dropping" | "abandoned",
     as_of: datetime, created_at: datetime, ready_at: datetime | None,
     collections: {users: "user_features_<snapshot_id>", items: "item_features_<snapshot_id>"},
     counts: {users: int, items: int}, view_versions: {user_features: str, item_features: str},
     catalogue: {items: int, interactions: int,              # `catalogue_summary`, for /stats
                 genres: [{genre: str, items: int, interactions: int}]}}

``feature_state`` -- the pointer, a single document::

    {_id: "online", snapshot_id: <snapshot_id>, previous: <snapshot_id> | None,
     switched_at: datetime}

``user_features_<snapshot_id>`` -- one document per user, every column of the view::

    {_id: <user_id>, snapshot_id, as_of, <user attributes, e.g. age, gender>,
     n_interactions, n_items, n_purchases, n_likes, n_recent, active_days, mean_rating,
     rating_std, first_ts, last_ts, days_since_last,
     genre_affinity: [{genre: str, fraction: float}, ...],
     recent_items: [{item_id: str, last_ts: datetime}, ...]}   # newest first, at most 20

``item_features_<snapshot_id>`` -- one document per item::

    {_id: <item_id>, snapshot_id, as_of, title, genres: [str], release_year, <other attributes>,
     n_interactions, n_users, n_recent_users, mean_rating, rating_std, first_ts, last_ts,
     popularity_rank, trending_rank, age_days, age_years}

Nulls (e.g. `mean_rating` of a user without ratings) are stored as `null`.

The API reads through `OnlineReader` (pymongo's async client); batch code uses the sync
functions. Both follow the same pointer and collection names.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.database import Database

from features.snapshot import Manifest
from recsys.errors import FeatureStoreError
from recsys.mongo import (
    FEATURE_SNAPSHOTS,
    FEATURE_STATE,
    ONLINE_POINTER_ID,
    feature_collection,
    feature_collections,
)
from recsys.progress import ProgressCallback, report_progress
from recsys.versions import STATUS_ABANDONED, VersionedCollections

log = logging.getLogger(__name__)

ENTITY_VIEWS = {"users": ("user_features", "user_id"), "items": ("item_features", "item_id")}
"""entity -> (snapshot view copied online, its key column)."""


def online_versions(db: Database) -> VersionedCollections:
    """The online store's snapshots in `db` (feature_snapshots + the `online` pointer)."""
    return VersionedCollections(
        db, registry=FEATURE_SNAPSHOTS, pointer=FEATURE_STATE, pointer_id=ONLINE_POINTER_ID,
        pointer_field="snapshot_id", collections=feature_collections, kind="snapshot id",
        error=FeatureStoreError)


def snapshot_documents(manifest: Manifest, entity: str, batch_size: int
                       ) -> Iterator[list[dict[str, Any]]]:
    """The online documents of a snapshot's `entity` ("users" or "items"), `batch_size` a list."""
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


def _insert(db: Database, name: str, docs: Iterable[list[dict[str, Any]]], *,
            progress: ProgressCallback | None = None, step: str = "", total: int | None = None
            ) -> int:
    coll = db[name]
    written = 0
    for chunk in docs:
        if chunk:
            coll.insert_many(chunk, ordered=False)
            written += len(chunk)
            report_progress(progress, step, written, total)
    return written


def catalogue_summary(manifest: Manifest) -> dict[str, Any]:
    """Catalogue totals of a snapshot's item_features: items, interactions (the sum of
    `n_interactions`) and per genre the items and their interactions, busiest first.

    Computed once when the snapshot is materialized (two columns, vectorised) and stored in
    its registry document, so the API's `/stats` never scans the item collection.
    """
    path = manifest.view_path(ENTITY_VIEWS["items"][0])
    names = set(pq.read_schema(path).names)
    table = pq.read_table(path, columns=[c for c in ("genres", "n_interactions") if c in names])
    n = table.num_rows
    events = (pc.fill_null(table.column("n_interactions"), 0).combine_chunks()
              if "n_interactions" in names else pa.array([0] * n, pa.int64()))
    rows: list[dict[str, Any]] = []
    if "genres" in names and n:
        genres = table.column("genres").combine_chunks()
        pairs = pa.table({"genre": pc.list_flatten(genres),
                          "n": pc.take(events, pc.list_parent_indices(genres))})
        grouped = pairs.filter(pc.is_valid(pairs.column("genre"))).group_by("genre").aggregate(
            [("n", "count"), ("n", "sum")])
        rows = [{"genre": str(g), "items": int(c), "interactions": int(t or 0)}
                for g, c, t in zip(grouped.column("genre").to_pylist(),
                                   grouped.column("n_count").to_pylist(),
                                   grouped.column("n_sum").to_pylist(), strict=True)]
        rows.sort(key=lambda r: (-r["interactions"], r["genre"]))
    return {"items": n, "interactions": int(pc.sum(events).as_py() or 0), "genres": rows}


def is_materialized(db: Database, snapshot_id: str) -> bool:
    """True when `snapshot_id` is written, verified and can be switched to."""
    return online_versions(db).is_ready(snapshot_id)


def write_snapshot(db: Database, manifest: Manifest, *, batch_size: int = 5000,
                   progress: ProgressCallback | None = None) -> dict[str, Any]:
    """Write and verify a snapshot's user and item features, without switching to it.

    A snapshot already materialized (status ready) is not rewritten. A failed write is removed
    again; the online snapshot never changes here. `progress` is told the documents written
    after each batch (steps ``write <entity> features``).

    Returns:
        ``{snapshot_id, counts: {users, items}, collections, seconds, rewritten}``.

    Raises:
        InvalidId: the snapshot id cannot name a collection.
        FeatureStoreError: the snapshot lacks a view, or a written count does not match.
    """
    started = time.perf_counter()
    sid = manifest.snapshot_id
    versions = online_versions(db)
    collections = {entity: feature_collection(entity, sid) for entity in ENTITY_VIEWS}
    existing = versions.get(sid)
    if existing is not None and existing.get("status") == "ready":
        return {"snapshot_id": sid, "counts": existing["counts"],
                "collections": existing["collections"], "seconds": 0.0, "rewritten": False}
    for view, _ in ENTITY_VIEWS.values():
        if view not in manifest.views:
            raise FeatureStoreError(f"snapshot {sid} has no {view} view to materialize")
    versions.begin(sid, {
        "as_of": datetime.fromisoformat(manifest.as_of) if manifest.as_of else None,
        "collections": collections, "counts": {},
        "view_versions": {v: manifest.views[v].version for v, _ in ENTITY_VIEWS.values()},
    })
    counts: dict[str, int] = {}
    try:
        for entity, name in collections.items():
            counts[entity] = _insert(db, name, snapshot_documents(manifest, entity, batch_size),
                                     progress=progress, step=f"write {entity} features",
                                     total=manifest.views[ENTITY_VIEWS[entity][0]].rows)
        versions.verify_counts(sid, {name: manifest.views[ENTITY_VIEWS[entity][0]].rows
                                     for entity, name in collections.items()},
                               {name: counts[entity] for entity, name in collections.items()})
        versions.mark_ready(sid, {"counts": counts, "catalogue": catalogue_summary(manifest)})
    except BaseException:
        if versions.active() != sid:  # never drop what readers are being served
            versions.drop(sid)
        raise
    seconds = round(time.perf_counter() - started, 3)
    log.info("online features: snapshot %s written (%s) in %.1fs", sid, counts, seconds)
    return {"snapshot_id": sid, "counts": counts, "collections": collections,
            "seconds": seconds, "rewritten": True}


def switch_online(db: Database, snapshot_id: str) -> str | None:
    """Point the online store at a materialized snapshot (one atomic write).

    Returns:
        The snapshot online before (`snapshot_id` itself when it already was; None at first).

    Raises:
        FeatureStoreError: the snapshot is not materialized (ready); nothing changes.
    """
    return online_versions(db).switch(snapshot_id)


def revert_online(db: Database, snapshot_id: str, previous: str | None) -> None:
    """Undo `switch_online(db, snapshot_id)` that returned `previous` (None: no pointer before)."""
    online_versions(db).revert_switch(snapshot_id, previous)


def prune_online(db: Database, *, keep: int, protect: Iterable[str] = ()) -> list[str]:
    """Drop materialized snapshots beyond the newest `keep`; never the online one nor `protect`.

    Returns:
        The dropped snapshot ids, newest first.
    """
    return online_versions(db).prune(keep, protect)


def cleanup_online(db: Database) -> list[str]:
    """Abandon snapshots a crashed materialization left half-written (never the online one):
    their collections are dropped, their documents kept a while as tombstones
    (`recsys.versions.VersionedCollections.cleanup_incomplete`)."""
    return online_versions(db).cleanup_incomplete()


def online_snapshot(db: Database) -> str | None:
    """The snapshot id the online store serves (None before the first materialization)."""
    return online_versions(db).active()


def materialized_snapshots(db: Database) -> set[str]:
    """Every snapshot id with a document in the online registry (being written, ready or
    being dropped; not one a cleanup abandoned)."""
    return {str(doc["_id"]) for doc in db[FEATURE_SNAPSHOTS].find(
        {"status": {"$ne": STATUS_ABANDONED}}, {"_id": 1})}


def read_online_features(db: Database, entity: str, ids: list[str]) -> dict[str, dict[str, Any]]:
    """Feature documents of `ids` from the online snapshot ("users" or "items"): one query."""
    sid = online_snapshot(db)
    if sid is None:
        return {}
    coll = db[feature_collection(entity, sid)]
    return {doc["_id"]: doc for doc in coll.find({"_id": {"$in": list(ids)}})}


# ------------------------------------------------------------------ async reads (the API)

_BOOKKEEPING = ("_id", "snapshot_id", "as_of")
"""Fields every online document carries that are not attributes or features."""


@dataclass(frozen=True, slots=True)
class OnlineSnapshot:
    """The snapshot the online store serves: its id, as-of time, document counts and
    catalogue totals (`catalogue_summary`; None for a snapshot materialized before them)."""

    snapshot_id: str
    as_of: datetime | None
    counts: dict[str, int]
    catalogue: dict[str, Any] | None = None


def attribute_query(filters: Sequence[tuple[str, str]]) -> dict[str, Any]:
    """A MongoDB query keeping documents whose field equals each value, or whose list field
    contains it. Values arrive as text, so a number or boolean field matches its text form
    ("1995" matches 1995)."""
    query: dict[str, Any] = {}
    for name, text in filters:
        candidates: list[Any] = [text]
        for cast in (int, float):
            try:
                candidates.append(cast(text))
            except ValueError:
                pass
        if text.lower() in ("true", "false"):
            candidates.append(text.lower() == "true")
        query.setdefault("$and", []).append({name: {"$in": candidates}})
    return query


class OnlineReader:
    """Reads of the online feature store for the async API (one query each).

    Args:
        db: the database on pymongo's `AsyncMongoClient`; deadlines are the caller's.
    """

    def __init__(self, db: AsyncDatabase) -> None:
        self._db = db

    async def snapshot(self) -> OnlineSnapshot | None:
        """The online snapshot (None before the first materialization): two reads by `_id`."""
        pointer = await self._db[FEATURE_STATE].find_one({"_id": ONLINE_POINTER_ID},
                                                         {"snapshot_id": 1})
        if not pointer or not pointer.get("snapshot_id"):
            return None
        sid = str(pointer["snapshot_id"])
        doc = await self._db[FEATURE_SNAPSHOTS].find_one(
            {"_id": sid}, {"as_of": 1, "counts": 1, "catalogue": 1}) or {}
        return OnlineSnapshot(snapshot_id=sid, as_of=doc.get("as_of"),
                              counts=dict(doc.get("counts") or {}),
                              catalogue=doc.get("catalogue"))

    async def features(self, entity: str, snapshot_id: str,
                       ids: Sequence[str]) -> dict[str, dict[str, Any]]:
        """Feature documents of `ids` ("users" or "items") in one `$in` read."""
        if not ids:
            return {}
        coll = self._db[feature_collection(entity, snapshot_id)]
        return {doc["_id"]: doc async for doc in coll.find({"_id": {"$in": list(ids)}})}

    async def item_fields(self, snapshot_id: str) -> list[str]:
        """Names of the item documents' attributes and features (from one document; every
        document of a snapshot has the same fields)."""
        doc = await self._db[feature_collection("items", snapshot_id)].find_one({})
        return sorted(k for k in doc or {} if k not in _BOOKKEEPING)

    async def items(self, snapshot_id: str, filters: Sequence[tuple[str, str]], *,
                    offset: int, limit: int) -> list[dict[str, Any]]:
        """One page of item documents matching `filters` (see `attribute_query`), by item id."""
        cursor = (self._db[feature_collection("items", snapshot_id)]
                  .find(attribute_query(filters)).sort("_id", 1).skip(offset).limit(limit))
        return [doc async for doc in cursor]

    async def count_items(self, snapshot_id: str, filters: Sequence[tuple[str, str]]) -> int:
        """Item documents matching `filters`."""
        coll = self._db[feature_collection("items", snapshot_id)]
        if not filters:
            return int(await coll.estimated_document_count())
        return int(await coll.count_documents(attribute_query(filters)))
