"""Catalogue and stats reads: the online feature store's items (through its owner,
`features.online.OnlineReader`) and the serving store's version documents.

Every read runs under the MongoDB guard (deadline, breaker). What cannot change while a version
is served is kept in `Services.aggregates` for that version (its `model_versions` document, the
catalogue's field names). Nothing here scans a collection: the recommendation counts (coverage,
genre shares) were computed when the version was published (`serving/rec_stats.py`), the
catalogue totals when its feature snapshot was materialized (`features.online.
catalogue_summary`); both are read with their registry documents.
"""

from __future__ import annotations

from collections.abc import Awaitable, Sequence
from typing import Any, TypeVar

from fastapi.exceptions import RequestValidationError

from features.online import OnlineReader, OnlineSnapshot
from features.registry import ITEM_FEATURES
from recsys.errors import NotFound
from recsys.mongo import MODEL_VERSIONS, similar_collection
from serving.api.active import ActiveState
from serving.api.cache import MISSING
from serving.api.deps import Services

T = TypeVar("T")

ITEM_FEATURE_NAMES = frozenset(c.name for c in ITEM_FEATURES.columns)
"""Columns the item_features view computes; every other field of an item is an attribute."""
_SHOWN = ("_id", "snapshot_id", "as_of", "title", "genres")

_VERSION_FIELDS = {"status": 1, "created_at": 1, "ready_at": 1, "generated_at": 1, "counts": 1,
                   "publish_seconds": 1, "recommendations": 1, "metadata.metrics": 1,
                   "metadata.feature_snapshot": 1, "metadata.created_at": 1,
                   "features": 1}


async def guarded(svc: Services, read: Awaitable[T]) -> T:
    """Await one read under the guard (deadline, breaker, outage -> 503)."""
    async with svc.guard.read():
        return await read


def reader(svc: Services) -> OnlineReader:
    return OnlineReader(svc.db)


async def online_snapshot(svc: Services) -> OnlineSnapshot | None:
    """The online feature snapshot now (read every time: it is two reads by `_id`, and a
    republish of the active version may re-point it)."""
    return await guarded(svc, reader(svc).snapshot())


# ------------------------------------------------------------------ version documents

async def version_doc(svc: Services, version: str) -> dict[str, Any] | None:
    """A `model_versions` document (the fields the API shows), cached while `version` is
    served: its content does not change once ready."""
    async def read() -> dict[str, Any] | None:
        return await guarded(svc, svc.db[MODEL_VERSIONS].find_one({"_id": version},
                                                                   _VERSION_FIELDS))
    active = svc.active.state
    if active is not None and active.version == version:
        return await svc.aggregates.get(version, "version_doc", read)
    return await read()


async def ready_versions(svc: Services, limit: int = 20) -> list[dict[str, Any]]:
    """The newest ready versions (kept ones; `keep_versions` bounds them), newest first."""
    cursor = (svc.db[MODEL_VERSIONS].find({"status": "ready"}, _VERSION_FIELDS)
              .sort([("created_at", -1), ("_id", -1)]).limit(limit))

    async def read() -> list[dict[str, Any]]:
        return [doc async for doc in cursor]
    return await guarded(svc, read())


async def last_publish(svc: Services, active: ActiveState) -> dict[str, Any] | None:
    """The newest `model_versions` document, whatever its status."""
    cursor = (svc.db[MODEL_VERSIONS].find({}, {"status": 1, "created_at": 1, "ready_at": 1,
                                               "publish_seconds": 1})
              .sort([("created_at", -1), ("_id", -1)]).limit(1))

    async def read() -> list[dict[str, Any]]:
        return [doc async for doc in cursor]
    docs = await guarded(svc, read())
    if not docs:
        return None
    doc = docs[0]
    return {"version": doc["_id"], "status": doc.get("status", "unknown"),
            "active": doc["_id"] == active.version, "created_at": doc.get("created_at"),
            "ready_at": doc.get("ready_at"), "publish_seconds": doc.get("publish_seconds")}


def flat_metrics(metrics: Any, prefix: str = "") -> dict[str, int | float]:
    """Numeric leaves of a metrics tree as ``{"als.ndcg@10": 0.23, "k": 10}`` (timings and
    non-numbers left out)."""
    out: dict[str, int | float] = {}
    if not isinstance(metrics, dict):
        return out
    for key, value in metrics.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict) and key != "timings":
            out.update(flat_metrics(value, f"{name}."))
        elif isinstance(value, int | float) and not isinstance(value, bool):
            out[name] = value
    return out


# ------------------------------------------------------------------ items

def split_item(doc: dict[str, Any]) -> dict[str, Any]:
    """An online item document as ``{item_id, title, genres, attributes, features}``."""
    genres = doc.get("genres")
    return {
        "item_id": doc["_id"],
        "title": doc.get("title"),
        "genres": [str(g) for g in genres] if isinstance(genres, list) else [],
        "attributes": {k: v for k, v in doc.items()
                       if k not in _SHOWN and k not in ITEM_FEATURE_NAMES},
        "features": {k: v for k, v in doc.items() if k in ITEM_FEATURE_NAMES},
    }


async def known_items(svc: Services, active: ActiveState, ids: Sequence[str]) -> set[str]:
    """The ids among `ids` that the active version knows (it has their similar lists)."""
    if not ids:
        return set()
    coll = svc.db[similar_collection(active.version)]

    async def read() -> set[str]:
        return {d["_id"] async for d in coll.find({"_id": {"$in": list(ids)}}, {"_id": 1})}
    return await guarded(svc, read())


async def _check_item_filters(svc: Services, active: ActiveState, sid: str,
                              filters: Sequence[tuple[str, str]]) -> None:
    if not filters:
        return
    fields = await svc.aggregates.get(active.version, f"item_fields:{sid}",
                                      lambda: guarded(svc, reader(svc).item_fields(sid)))
    for name, _ in filters:
        if name not in fields:
            raise RequestValidationError([{
                "type": "value_error", "loc": ("query", "filter"), "input": name,
                "msg": f"cannot filter on {name!r}: the catalogue (feature snapshot {sid}) has "
                       f"item fields: {', '.join(fields) or 'none'}"}])


async def list_items(svc: Services, active: ActiveState, filters: Sequence[tuple[str, str]],
                     *, offset: int, k: int) -> dict[str, Any]:
    """One page of the catalogue (the online snapshot's items) matching every filter."""
    snap = await online_snapshot(svc)
    head = {"model_version": active.version, "snapshot_id": None, "as_of": None,
            "offset": offset}
    if snap is None:
        return {**head, "total": 0, "next_offset": None, "items": []}
    sid = snap.snapshot_id
    await _check_item_filters(svc, active, sid, filters)
    docs = await guarded(svc, reader(svc).items(sid, filters, offset=offset, limit=k))
    key = f"{sid}:{sorted(filters)!r}"
    total = svc.cache.get(active.version, "items_total", key)
    if total is MISSING:
        total = await guarded(svc, reader(svc).count_items(sid, filters))
        svc.cache.put(active.version, "items_total", key, total)
    known = await known_items(svc, active, [d["_id"] for d in docs])
    items = []
    for doc in docs:
        item = split_item(doc)
        features = item.pop("features")
        items.append({**item, "n_interactions": features.get("n_interactions"),
                      "n_users": features.get("n_users"),
                      "popularity_rank": features.get("popularity_rank"),
                      "in_model": item["item_id"] in known})
    end = offset + len(items)
    return {**head, "snapshot_id": sid, "as_of": snap.as_of, "total": total,
            "next_offset": end if end < total else None, "items": items}


async def item_detail(svc: Services, active: ActiveState, item_id: str) -> dict[str, Any]:
    """An item's attributes and online features.

    Raises:
        NotFound: no feature snapshot is online, or the item is not in it.
    """
    snap = await online_snapshot(svc)
    if snap is None:
        raise NotFound(f"item {item_id!r}: no feature snapshot is online yet")
    found = await guarded(svc, reader(svc).features("items", snap.snapshot_id, [item_id]))
    if item_id not in found:
        raise NotFound(f"item {item_id!r} is not in the catalogue (feature snapshot "
                       f"{snap.snapshot_id})")
    known = await known_items(svc, active, [item_id])
    return {**split_item(found[item_id]), "model_version": active.version,
            "snapshot_id": snap.snapshot_id, "as_of": snap.as_of,
            "in_model": item_id in known}


# ------------------------------------------------------------------ stats

def _catalogue(snap: OnlineSnapshot | None) -> dict[str, Any] | None:
    """The online snapshot's catalogue totals (None: no snapshot online, or one materialized
    before they were recorded)."""
    return snap.catalogue if snap is not None else None


def _share(part: float | None, whole: float | None) -> float | None:
    if part is None or not whole:
        return None
    return round(part / whole, 4)


async def overview(svc: Services, active: ActiveState) -> dict[str, Any]:
    """Counts of the catalogue and the served version, its coverage and the last publish."""
    doc = await version_doc(svc, active.version) or {}
    snap = await online_snapshot(svc)
    summary = _catalogue(snap)
    counts = doc.get("counts") or {}
    recs = doc.get("recommendations")
    coverage = None
    if recs:
        catalogue = summary["items"] if summary else None
        denominator = catalogue or recs.get("items") or 0
        coverage = {"catalogue_items": denominator,
                    "catalogue": "online features" if catalogue else "model",
                    "recommended_items": recs["recommended_items"],
                    "share": _share(recs["recommended_items"], denominator) or 0.0,
                    "lists": recs["lists"], "slots": recs["slots"]}
    return {
        "model_version": active.version,
        "generated_at": active.generated_at,
        "switched_at": active.switched_at,
        "previous_version": active.previous,
        "users": snap.counts.get("users") if snap else None,
        "items": snap.counts.get("items") if snap else None,
        "interactions": summary["interactions"] if summary else None,
        "model_users": counts.get("users"),
        "model_items": counts.get("items"),
        "feature_snapshot": snap.snapshot_id if snap else None,
        "features_as_of": snap.as_of if snap else None,
        "last_publish": await last_publish(svc, active),
        "coverage": coverage,
        "metrics": flat_metrics((doc.get("metadata") or {}).get("metrics")),
    }


async def categories(svc: Services, active: ActiveState) -> dict[str, Any]:
    """Per genre: catalogue items and interactions (online snapshot) and share of the
    recommendations (recorded at publish)."""
    doc = await version_doc(svc, active.version) or {}
    snap = await online_snapshot(svc)
    summary = _catalogue(snap)
    recs = doc.get("recommendations") or {}
    catalogue = {g["genre"]: g for g in (summary or {}).get("genres", [])}
    listed = {g["genre"]: g for g in recs.get("genres") or []}
    slots = recs.get("slots") if recs.get("genres") is not None else None
    total_interactions = summary["interactions"] if summary else None
    rows = []
    for genre in sorted(set(catalogue) | set(listed)):
        cat, rec = catalogue.get(genre), listed.get(genre)
        items = cat["items"] if cat else (rec["items"] if rec and not summary else None)
        interactions = cat["interactions"] if cat else (0 if summary else None)
        recommended = rec["recommended_items"] if rec else (0 if slots is not None else None)
        genre_slots = rec["slots"] if rec else (0 if slots is not None else None)
        rows.append({
            "genre": genre, "items": items, "interactions": interactions,
            "interaction_share": _share(interactions, total_interactions),
            "recommended_items": recommended, "coverage": _share(recommended, items),
            "slots": genre_slots, "rec_share": _share(genre_slots, slots),
        })
    rows.sort(key=lambda r: (-(r["interactions"] or 0), -(r["slots"] or 0), r["genre"]))
    return {"model_version": active.version,
            "feature_snapshot": snap.snapshot_id if snap else None,
            "items": summary["items"] if summary else None,
            "interactions": total_interactions, "slots": slots, "categories": rows}
