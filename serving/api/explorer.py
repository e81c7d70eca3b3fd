"""The recommendations explorer's data: one user's lists, history and features, an item's
similar items, and how the active version differs from another kept one.

Everything comes from the API's own reads (`serving.api.queries` for lists, exactly as the
JSON endpoints return them; `serving.api.catalogue` for versions; the online feature store's
reader for titles, genres and history), so the page shows what clients get. The page itself is
rendered in `serving/api/routes/explorer.py`.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from features.online import OnlineSnapshot
from recsys.errors import NotFound
from recsys.mongo import recs_collection
from serving.api import catalogue, queries
from serving.api.active import ActiveState
from serving.api.cache import MISSING
from serving.api.deps import ListOptions, Services

SAMPLE_USERS = 8
"""User ids offered on the start page (the first ones of the active version's lists)."""
_LIST_PROJECTION = {"_id": 1, "items": 1}


def fmt_time(value: Any) -> str:
    """A datetime as ``2024-05-01 12:00 UTC``; anything else as text ('' for None)."""
    if isinstance(value, datetime):
        return value.strftime("%Y-%m-%d %H:%M UTC")
    return "" if value is None else str(value)


def fmt_number(value: Any, digits: int = 4) -> str:
    """Integers as integers, floats rounded (no trailing zeros), None as ''."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return str(value)
    if isinstance(value, int) or (isinstance(value, float) and value.is_integer()
                                  and abs(value) >= 1):
        return f"{int(value):,}"
    if isinstance(value, float):
        return f"{value:.{digits}f}".rstrip("0").rstrip(".") or "0"
    return str(value)


def fmt_fixed(value: Any, digits: int = 3) -> str:
    """A score with a fixed number of decimals ('' for None)."""
    return "" if value is None else f"{float(value):.{digits}f}"


async def _stored_list(svc: Services, version: str, user_id: str) -> list[dict[str, Any]] | None:
    """A user's stored list in another kept version (None: the version has no list for them)."""
    doc = svc.cache.get(version, "recs", user_id)
    if doc is MISSING:
        coll = svc.db[recs_collection(version)]
        doc = await catalogue.guarded(svc, coll.find_one({"_id": user_id}, _LIST_PROJECTION))
        svc.cache.put(version, "recs", user_id, doc)
    return None if doc is None else list(doc.get("items", []))


def compare_lists(active: list[dict[str, Any]], other: list[dict[str, Any]]) -> dict[str, Any]:
    """What changed from `other` to `active` (both ranked lists of ``{item_id, rank, ...}``).

    Returns:
        ``{gained: [{item_id, rank}], lost: [{item_id, rank}], moved: [{item_id, before,
        after, delta}], unchanged: int, overlap: float}``; `delta` > 0 means the item moved
        up; `overlap` is the share of the active list also in the other one.
    """
    now = {it["item_id"]: it["rank"] for it in active}
    before = {it["item_id"]: it["rank"] for it in other}
    gained = [{"item_id": i, "rank": r} for i, r in now.items() if i not in before]
    lost = [{"item_id": i, "rank": r} for i, r in before.items() if i not in now]
    common = [i for i in now if i in before]
    moved = [{"item_id": i, "before": before[i], "after": now[i], "delta": before[i] - now[i]}
             for i in common if before[i] != now[i]]
    moved.sort(key=lambda m: (-abs(m["delta"]), m["after"]))
    return {"gained": gained, "lost": lost, "moved": moved,
            "unchanged": len(common) - len(moved),
            "overlap": round(len(common) / len(now), 4) if now else 0.0}


def _version_row(doc: dict[str, Any], role: str) -> dict[str, Any]:
    meta = doc.get("metadata") or {}
    return {"version": doc["_id"], "role": role, "created_at": doc.get("created_at"),
            "ready_at": doc.get("ready_at"), "feature_snapshot": meta.get("feature_snapshot"),
            "metrics": catalogue.flat_metrics(meta.get("metrics"))}


async def _versions(svc: Services, active: ActiveState,
                    compare: str | None) -> tuple[list[dict[str, Any]], dict[str, Any] | None,
                                                  str | None]:
    """Kept ready versions, the one compared with (the asked one, else the previous one),
    and a note when the asked one is not available."""
    docs = await catalogue.ready_versions(svc)
    by_id = {doc["_id"]: doc for doc in docs}
    note = None
    wanted = compare or active.previous
    if compare and (compare == active.version or compare not in by_id):
        note = (f"version {compare} is the active one" if compare == active.version
                else f"version {compare} is not a kept, ready version")
        wanted = active.previous
    other = by_id.get(wanted) if wanted and wanted != active.version else None
    choices = [{"version": d["_id"], "active": d["_id"] == active.version,
                "created_at": d.get("created_at")} for d in docs]
    return choices, other, note


def _metric_rows(active_row: dict[str, Any], other_row: dict[str, Any] | None
                 ) -> list[dict[str, Any]]:
    """Metric rows of both versions. Where metrics are grouped by model (`als.ndcg@10`,
    `popular.ndcg@10`), only those and `k` are shown: the rest is bookkeeping (seeds, sizes)."""
    names = list(active_row["metrics"])
    if other_row:
        names += [n for n in other_row["metrics"] if n not in active_row["metrics"]]
    if any("." in n for n in names):
        names = [n for n in names if "." in n and not n.endswith(".users") or n == "k"]
    rows = []
    for name in names:
        a = active_row["metrics"].get(name)
        b = other_row["metrics"].get(name) if other_row else None
        delta = a - b if isinstance(a, int | float) and isinstance(b, int | float) else None
        rows.append({"name": name, "active": a, "other": b, "delta": delta})
    return rows


async def _user_section(svc: Services, active: ActiveState, user: str, k: int,
                        snap: OnlineSnapshot | None, other: dict[str, Any] | None
                        ) -> dict[str, Any]:
    opts = ListOptions(k=k, explain=True)
    recs = await queries.user_recommendations(svc, active, user, opts)
    features = None
    if snap is not None:
        found = await catalogue.guarded(
            svc, catalogue.reader(svc).features("users", snap.snapshot_id, [user]))
        features = found.get(user)
    history = list((features or {}).get("recent_items") or [])
    changes = None
    if other is not None and recs["source"] == "personalized":
        before = await _stored_list(svc, other["_id"], user)
        changes = ({"missing": True} if before is None
                   else {**compare_lists(recs["items"], before[:k]), "missing": False})
    return {"id": user, "recs": recs, "features": features, "history": history,
            "changes": changes}


async def _item_section(svc: Services, active: ActiveState, item: str,
                        k: int) -> dict[str, Any]:
    opts = ListOptions(k=min(k, svc.settings.similar_n))
    try:
        similar = await queries.similar_items(svc, active, item, opts)
    except NotFound as exc:
        return {"id": item, "similar": None, "error": str(exc)}
    return {"id": item, "similar": similar, "error": None}


def _item_ids(user: dict[str, Any] | None, item: dict[str, Any] | None) -> list[str]:
    ids: list[str] = []
    if user is not None:
        for it in user["recs"]["items"]:
            ids.append(it["item_id"])
            ids.extend(b["item_id"] for b in it.get("because") or ())
        ids.extend(h["item_id"] for h in user["history"])
        changes = user["changes"] or {}
        for key in ("gained", "lost", "moved"):
            ids.extend(c["item_id"] for c in changes.get(key, ()))
    if item is not None:
        ids.append(item["id"])
        if item["similar"]:
            ids.extend(it["item_id"] for it in item["similar"]["items"])
    return list(dict.fromkeys(ids))


async def _sample_users(svc: Services, active: ActiveState) -> list[str]:
    coll = svc.db[recs_collection(active.version)]

    async def read() -> list[str]:
        return [d["_id"] async for d in coll.find({}, {"_id": 1}).limit(SAMPLE_USERS)]
    return await catalogue.guarded(svc, read())


async def explorer_context(svc: Services, active: ActiveState, *, user: str | None,
                           item: str | None, compare: str | None, k: int) -> dict[str, Any]:
    """Everything the explorer page shows (plain data; the template formats it): the top `k`
    of the user's list and of the item's similar items; changes are counted within the top
    `k` of both versions."""
    choices, other, note = await _versions(svc, active, compare)
    active_doc = await catalogue.version_doc(svc, active.version) or {"_id": active.version}
    active_row = _version_row(active_doc, "active")
    other_row = _version_row(other, "compared") if other else None
    snap = await catalogue.online_snapshot(svc)
    user_part = (await _user_section(svc, active, user, k, snap, other)) if user else None
    item_part = (await _item_section(svc, active, item, k)) if item else None
    ids = _item_ids(user_part, item_part)
    catalogue_items: dict[str, dict[str, Any]] = {}
    if snap is not None and ids:
        found = await catalogue.guarded(
            svc, catalogue.reader(svc).features("items", snap.snapshot_id, ids))
        catalogue_items = {i: catalogue.split_item(doc) for i, doc in found.items()}
    return {
        "active": active, "active_row": active_row, "other_row": other_row,
        "metric_rows": _metric_rows(active_row, other_row), "versions": choices,
        "compare_note": note, "snapshot": snap, "user": user_part, "item": item_part,
        "catalogue": catalogue_items,
        "sample_users": [] if user else await _sample_users(svc, active),
    }
