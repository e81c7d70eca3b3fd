"""The API's reads by `_id` on the active version's collections, behind the version-keyed
document cache: concurrent single reads share `$in` reads (`serving.api.coalesce`), a batch
request reads its ids in `$in` chunks; all under the MongoDB guard."""

from __future__ import annotations

from typing import Any

from fastapi.exceptions import RequestValidationError

from recsys.errors import NotFound
from recsys.mongo import (
    item_embeddings_collection,
    recs_collection,
    similar_collection,
    user_embeddings_collection,
)
from serving.api.active import ActiveState
from serving.api.cache import MISSING
from serving.api.deps import ListOptions, Services
from serving.documents import decode_vector

# Reads take whole documents, without a projection: a list document holds only `_id`,
# `model_version`, `generated_at` and `items` (serving/documents.py), and `secantusd-py` spends
# about 30 % more time on a `find_one` that applies one (9.6 against 6.9 ms, loaded machine).

BATCH_READ_IDS = 50
"""Ids per `$in` read of a batch. The reads run one after another, each with its own deadline
(`RECSYS_API_READ_TIMEOUT_MS`). Measured on the embedded server (one Python process) with lists
of 50 items, explanations and genres, on a loaded 2-core machine: one read of 1,000 ids took
5-12 s; reads of 100 took up to 1.4 s, of 50 up to 0.8 s (1,000 ids in about 10 s in all).
Concurrent reads do not help there: they share the server's one CPU, so each would take as long
as all of them. A real MongoDB answers 50 ids by `_id` in about a millisecond."""


# ------------------------------------------------------------------ list options

def _check_filters(active: ActiveState, opts: ListOptions, where: str = "query") -> None:
    for attr, _ in opts.filters:
        if attr not in active.attributes:
            have = ", ".join(sorted(active.attributes)) or "none"
            raise RequestValidationError([{
                "type": "value_error", "loc": (where, "filter"), "input": attr,
                "msg": f"cannot filter on {attr!r}: model version {active.version} has item "
                       f"attributes: {have}",
            }])


def _matches(item: dict[str, Any], filters: tuple[tuple[str, str], ...]) -> bool:
    for attr, want in filters:
        value = item.get(attr)
        if isinstance(value, list):
            if want not in value:
                return False
        elif value is None or str(value) != want:
            return False
    return True


def cut(items: list[dict[str, Any]], opts: ListOptions) -> dict[str, Any]:
    """Apply exclude, filters and the page to a stored list (never mutates `items`).

    Returns:
        ``{items, total, offset, next_offset}``; `total` counts items after exclude/filters.
    """
    kept = items
    if opts.exclude or opts.filters:
        kept = [it for it in items
                if it["item_id"] not in opts.exclude and _matches(it, opts.filters)]
    page = kept[opts.offset: opts.offset + opts.k]
    if not opts.explain:
        page = [{k: v for k, v in it.items() if k != "because"} if "because" in it else it
                for it in page]
    end = opts.offset + len(page)
    return {"items": page, "total": len(kept), "offset": opts.offset,
            "next_offset": end if end < len(kept) else None}


# ------------------------------------------------------------------ reads

async def _find_list(svc: Services, active: ActiveState, kind: str, collection: str,
                     key: str) -> dict[str, Any] | None:
    doc = svc.cache.get(active.version, kind, key)
    if doc is MISSING:
        doc = await svc.reads.find(svc.db[collection], key)  # with the other reads waiting now
        svc.cache.put(active.version, kind, key, doc)
    return doc


def _user_answer(user_id: str, active: ActiveState, doc: dict[str, Any] | None,
                 opts: ListOptions) -> dict[str, Any]:
    if doc is not None:
        head = {"user_id": user_id, "model_version": doc.get("model_version", active.version),
                "generated_at": doc.get("generated_at", active.generated_at),
                "source": "personalized"}
        return {**head, **cut(doc.get("items", []), opts)}
    return {"user_id": user_id, "model_version": active.version,
            "generated_at": active.generated_at, "source": "popular",
            **cut(active.popular, opts)}


async def user_recommendations(
    svc: Services, active: ActiveState, user_id: str, opts: ListOptions
) -> dict[str, Any]:
    """Top-k for a known user; the cached popular list (no extra read) for an unknown one."""
    _check_filters(active, opts)
    doc = await _find_list(svc, active, "recs", recs_collection(active.version), user_id)
    return _user_answer(user_id, active, doc, opts)


async def batch_recommendations(
    svc: Services, active: ActiveState, user_ids: list[str], opts: ListOptions
) -> dict[str, Any]:
    """Recommendations for many users: cached ones from memory, the rest in `$in` reads of
    `BATCH_READ_IDS` ids (answers are cached as each read completes, so a retry after a timeout
    starts where it stopped)."""
    _check_filters(active, opts, where="body")
    unique = list(dict.fromkeys(user_ids))
    docs: dict[str, dict[str, Any] | None] = {}
    missing: list[str] = []
    for uid in unique:
        doc = svc.cache.get(active.version, "recs", uid)
        if doc is MISSING:
            missing.append(uid)
        else:
            docs[uid] = doc
    collection = svc.db[recs_collection(active.version)]
    for start in range(0, len(missing), BATCH_READ_IDS):
        chunk = missing[start: start + BATCH_READ_IDS]
        async with svc.guard.read():  # each chunk gets the whole read deadline
            cursor = collection.find({"_id": {"$in": chunk}})
            found = {d["_id"]: d async for d in cursor}
        for uid in chunk:
            doc = found.get(uid)
            docs[uid] = doc
            svc.cache.put(active.version, "recs", uid, doc)
    return {
        "model_version": active.version,
        "generated_at": active.generated_at,
        "results": [_user_answer(uid, active, docs[uid], opts) for uid in user_ids],
    }


async def similar_items(
    svc: Services, active: ActiveState, item_id: str, opts: ListOptions
) -> dict[str, Any]:
    _check_filters(active, opts)
    doc = await _find_list(svc, active, "similar", similar_collection(active.version), item_id)
    if doc is None:
        raise NotFound(f"item {item_id!r} is unknown to model version {active.version}")
    return {
        "item_id": item_id,
        "model_version": doc.get("model_version", active.version),
        "generated_at": doc.get("generated_at", active.generated_at),
        "source": "similar",
        **cut(doc.get("items", []), opts),
    }


async def embedding(
    svc: Services, active: ActiveState, kind: str, entity_id: str
) -> dict[str, Any]:
    """`kind` is "user" or "item"."""
    cache_kind = f"{kind}_embedding"
    answer = svc.cache.get(active.version, cache_kind, entity_id)
    if answer is MISSING:
        name = (user_embeddings_collection if kind == "user" else item_embeddings_collection)(
            active.version
        )
        doc = await svc.reads.find(svc.db[name], entity_id)
        answer = None if doc is None else {
            "id": entity_id,
            "model_version": doc.get("model_version", active.version),
            "dim": doc["dim"],
            "vector": decode_vector(doc["vector"]),
        }
        svc.cache.put(active.version, cache_kind, entity_id, answer)
    if answer is None:
        raise NotFound(f"{kind} {entity_id!r} is unknown to model version {active.version}")
    return answer
