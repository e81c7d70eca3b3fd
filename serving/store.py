"""The MongoDB serving store: versioned collections plus one pointer document.

A publish writes a complete, immutable set of collections for one model version; the API serves
whichever version the pointer names. Switching (and rolling back) is one atomic write of the
pointer; nothing is renamed and `$out` is never used (see PITFALLS.md, "MongoDB serving").

Document shapes (every serving document carries `model_version`; datetimes are UTC):

``model_versions`` -- one document per version::

    {_id: <version>, status: "building" | "ready" | "dropping",
     created_at: datetime, ready_at: datetime | None, generated_at: datetime,
     counts: {users, items, recs, similar, popular, factors},
     publish_seconds: float | None, metadata: {...}}   # metadata: params, metrics, snapshot id

``serving_state`` -- the pointer, a single document::

    {_id: "active", version: <version>, previous: <version> | None, switched_at: datetime}

``recs_<version>`` -- one document per user (lookup by the default ``_id`` index)::

    {_id: <user_id>, model_version, generated_at,
     items: [{item_id: str, score: float, rank: int,
              <attribute>: value, ...,                       # payload.item_attributes, e.g. genres
              because: [{item_id: str, contribution: float}]}]}  # only with explanations

The version document also records ``features: {item_attributes: [names], explanations: bool}``.
Publishing inserts unordered batches of ``batch_size`` documents, building the next batch while
the previous one is written, then verifies counts (acknowledged inserts and the collection's
metadata count), the ``_id`` index of every collection and a
sample of ``VERIFY_SAMPLE`` users (list and embedding) before marking the version ready.

``similar_<version>`` -- one document per item, same shape with ``_id: <item_id>`` (the item
itself excluded).

``popular_<version>`` -- one document
``{_id: "popular", model_version, generated_at, items: [...]}``
(the fallback list for unknown users).

``user_embeddings_<version>`` / ``item_embeddings_<version>``::

    {_id: <id>, model_version, dim: int, vector: Binary(subtype 9, FLOAT32 vector)}

Ranks start at 1; ``-1`` padding in the payload is dropped, so a list may be shorter than N.
All API reads are by ``_id``, so the default ``_id`` index is the only one the collections need;
``model_versions`` gets an index on ``(status, created_at)`` for listing and pruning.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any, Protocol

import numpy as np
from bson.binary import Binary, BinaryVectorDtype
from bson.codec_options import CodecOptions
from pymongo import ASCENDING, DESCENDING, MongoClient, ReturnDocument
from pymongo.database import Database

from recsys.errors import PublishError
from recsys.settings import Settings
from serving.payload import PublishPayload

logger = logging.getLogger(__name__)

VERSIONS = "model_versions"
STATE = "serving_state"
ACTIVE_ID = "active"
POPULAR_ID = "popular"

STATUS_BUILDING = "building"
STATUS_READY = "ready"
STATUS_DROPPING = "dropping"

_VERSION_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,99}$")
VERIFY_SAMPLE = 32  # users checked against the payload after writing
_KINDS = ("recs", "similar", "popular", "user_embeddings", "item_embeddings")

CODEC_OPTIONS: CodecOptions = CodecOptions(tz_aware=True, tzinfo=UTC)


# --------------------------------------------------------------------------- naming

def check_version(version: str) -> str:
    """Return `version` if it is usable in collection names, else raise PublishError."""
    if not isinstance(version, str) or not _VERSION_RE.match(version):
        raise PublishError(
            f"invalid model version {version!r}: use 1-100 characters from [A-Za-z0-9_.-], "
            "starting with a letter or digit"
        )
    return version


def recs_collection(version: str) -> str:
    return f"recs_{version}"


def similar_collection(version: str) -> str:
    return f"similar_{version}"


def popular_collection(version: str) -> str:
    return f"popular_{version}"


def user_embeddings_collection(version: str) -> str:
    return f"user_embeddings_{version}"


def item_embeddings_collection(version: str) -> str:
    return f"item_embeddings_{version}"


def version_collections(version: str) -> list[str]:
    """Every collection that belongs to `version`."""
    return [f"{kind}_{version}" for kind in _KINDS]


def decode_vector(value: Binary) -> list[float]:
    """A stored FLOAT32 vector as Python floats (exactly the float32 values)."""
    return value.as_vector(return_numpy=True).data.astype(np.float64).tolist()


# --------------------------------------------------------------------------- clients

def mongo_client(settings: Settings) -> MongoClient:
    """A sync client for batch code (flows, CLI); the caller closes it."""
    return MongoClient(
        settings.mongodb_uri,
        serverSelectionTimeoutMS=settings.mongodb_timeout_ms,
        tz_aware=True,
    )


@contextmanager
def open_store(settings: Settings) -> Iterator[MongoServingStore]:
    """`with open_store(settings) as store:` on `settings.mongodb_db`; closes the client after."""
    client = mongo_client(settings)
    try:
        yield MongoServingStore(client[settings.mongodb_db])
    finally:
        client.close()


# --------------------------------------------------------------------------- interface

class ServingStore(Protocol):
    """The small interface the pipeline needs: write a version, read, switch, drop."""

    def publish(self, payload: PublishPayload, *, batch_size: int = 5000) -> dict[str, Any]: ...
    def activate(self, version: str) -> str | None: ...
    def active_version(self) -> str | None: ...
    def list_versions(self) -> list[dict[str, Any]]: ...
    def prune(self, keep: int) -> list[str]: ...
    def cleanup_incomplete(self) -> list[str]: ...


# --------------------------------------------------------------------------- document building

def _utc(value: datetime) -> datetime:
    """Timezone-aware UTC; a naive datetime is taken to be UTC already."""
    if value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    return value.astimezone(UTC)


def _check_ranked(name: str, idx: np.ndarray, scores: np.ndarray, n_items: int) -> np.ndarray:
    """Validate a (rows, N) index matrix with trailing -1 padding; return the per-row lengths."""
    if idx.ndim != 2:
        raise PublishError(f"{name}: expected a 2-D index array, got shape {idx.shape}")
    if not np.issubdtype(idx.dtype, np.integer):
        raise PublishError(f"{name}: expected integer item indices, got {idx.dtype}")
    valid = idx >= 0
    if idx.size and (idx.max() >= n_items or idx.min() < -1):
        raise PublishError(f"{name}: item index out of range [-1, {n_items})")
    if valid.shape[1] > 1 and np.any(valid[:, 1:] & ~valid[:, :-1]):
        raise PublishError(f"{name}: -1 padding must only appear at the end of a row")
    if not np.all(np.isfinite(scores[valid])):
        raise PublishError(f"{name}: scores must be finite")
    return valid.sum(axis=1)


_CHUNK_ROWS = 10_000


def _ranked_docs(
    ids: list[str],
    idx: np.ndarray,
    scores: np.ndarray,
    lengths: np.ndarray,
    item_ids: np.ndarray,
    base: dict[str, Any],
    *,
    attributes: dict[str, list[Any]] | None = None,
    explain_idx: np.ndarray | None = None,
    explain_scores: np.ndarray | None = None,
) -> Iterator[dict[str, Any]]:
    """One `{_id, ..., items: [...]}` document per row, built from whole-array conversions.

    Rows are converted `_CHUNK_ROWS` at a time, so memory stays bounded for millions of users.
    `attributes` (name -> one value per item index) are copied into every listed item; with
    `explain_idx`/`explain_scores` ((rows, N, E), -1 padded) each item gets
    ``because: [{item_id, contribution}]``.
    """
    attrs = list((attributes or {}).items())
    explain = explain_idx is not None and explain_scores is not None and len(item_ids) > 0
    for start in range(0, len(ids), _CHUNK_ROWS):
        stop = min(start + _CHUNK_ROWS, len(ids))
        chunk = idx[start:stop]
        if len(item_ids):
            safe = np.where(chunk >= 0, chunk, 0)
            names = item_ids[safe].tolist()
            positions = safe.tolist()
        else:  # no items: every row is padding
            names = positions = [[] for _ in range(stop - start)]
        score_rows = scores[start:stop].astype(np.float64).tolist()
        if explain:
            assert explain_idx is not None and explain_scores is not None
            ex = explain_idx[start:stop]
            ex_valid = ex >= 0
            ex_names = item_ids[np.where(ex_valid, ex, 0)].tolist()
            ex_scores = explain_scores[start:stop].astype(np.float64).tolist()
            ex_lens = ex_valid.sum(axis=2).tolist()
        for row, (key, n, row_names, row_scores) in enumerate(zip(
            ids[start:stop], lengths[start:stop].tolist(), names, score_rows, strict=True
        )):
            items = [
                {"item_id": name, "score": score, "rank": rank}
                for rank, (name, score) in enumerate(
                    zip(row_names[:n], row_scores[:n], strict=True), start=1
                )
            ]
            if attrs:
                for item, pos in zip(items, positions[row], strict=False):
                    for attr, values in attrs:
                        item[attr] = values[pos]
            if explain:
                row_ex = zip(items, ex_names[row], ex_scores[row], ex_lens[row], strict=False)
                for item, en, es, m in row_ex:
                    item["because"] = [
                        {"item_id": a, "contribution": c}
                        for a, c in zip(en[:m], es[:m], strict=True)
                    ]
            yield {"_id": key, **base, "items": items}


def _check_explain(
    idx: np.ndarray | None, scores: np.ndarray | None, rec_shape: tuple[int, ...], n_items: int
) -> tuple[np.ndarray, np.ndarray] | None:
    """Validate optional (n_users, N, E) explanation arrays (-1 padding at the end only)."""
    if idx is None:
        return None
    idx = np.asarray(idx)
    scores = np.asarray(scores)
    if idx.ndim != 3 or idx.shape[:2] != rec_shape or scores.shape != idx.shape:
        raise PublishError(
            f"rec_explain_items/rec_explain_scores: expected shape {rec_shape} + (E,), "
            f"got {idx.shape} and {scores.shape}"
        )
    flat = idx.reshape(-1, idx.shape[2]) if idx.shape[2] else idx.reshape(-1, 0)
    _check_ranked("rec_explain_items", flat, scores.reshape(flat.shape), n_items)
    return idx, scores


def _to_bson_value(value: Any) -> Any:
    """numpy scalars/arrays and tuples as plain Python values MongoDB can store."""
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, tuple | list):
        return [_to_bson_value(v) for v in value]
    if isinstance(value, float) and value != value:  # NaN: no value
        return None
    return value


def _attribute_values(attributes: dict[str, Any], n_items: int) -> dict[str, list[Any]]:
    """Item attributes as name -> list of BSON-ready values, one per item index."""
    out: dict[str, list[Any]] = {}
    for name, values in attributes.items():
        if not isinstance(name, str) or not name or name.startswith("$") or "." in name \
                or name in ("item_id", "score", "rank", "because"):
            raise PublishError(f"item_attributes: invalid attribute name {name!r}")
        seq = values.tolist() if isinstance(values, np.ndarray) else list(values)
        if len(seq) != n_items:
            raise PublishError(
                f"item_attributes[{name!r}]: {len(seq)} values for {n_items} items"
            )
        out[name] = [_to_bson_value(v) for v in seq]
    return out


def _embedding_docs(ids: list[str], factors: np.ndarray, version: str) -> Iterator[dict[str, Any]]:
    dim = int(factors.shape[1])
    for key, row in zip(ids, factors, strict=True):
        yield {
            "_id": key,
            "model_version": version,
            "dim": dim,
            "vector": Binary.from_vector(row, BinaryVectorDtype.FLOAT32),
        }


def _batches(docs: Iterable[dict[str, Any]], size: int) -> Iterator[list[dict[str, Any]]]:
    batch: list[dict[str, Any]] = []
    for doc in docs:
        batch.append(doc)
        if len(batch) >= size:
            yield batch
            batch = []
    if batch:
        yield batch


def _str_ids(name: str, ids: np.ndarray) -> list[str]:
    out = [str(x) for x in np.asarray(ids).tolist()]
    if len(set(out)) != len(out):
        raise PublishError(f"{name}: ids are not unique")
    return out


def _factors(name: str, arr: np.ndarray) -> np.ndarray:
    arr = np.asarray(arr)
    if arr.ndim != 2:
        raise PublishError(f"{name}: expected a 2-D array, got shape {arr.shape}")
    if not np.all(np.isfinite(arr)):
        raise PublishError(f"{name}: factors must be finite")
    return np.ascontiguousarray(arr, dtype=np.float32)


# --------------------------------------------------------------------------- the store

class MongoServingStore:
    """Versioned serving collections in one MongoDB database (see the module docstring).

    Args:
        db: a sync pymongo database; the store reads datetimes back as aware UTC.
    """

    def __init__(self, db: Database) -> None:
        self.db: Database = db.with_options(codec_options=CODEC_OPTIONS)
        self._versions = self.db[VERSIONS]
        self._state = self.db[STATE]

    # ---------------------------------------------------------------- reads

    def active_version(self) -> str | None:
        """The version the pointer names, or None before the first activation."""
        doc = self._state.find_one({"_id": ACTIVE_ID}, {"version": 1})
        return doc["version"] if doc else None

    def active_state(self) -> dict[str, Any] | None:
        """The pointer document ``{_id, version, previous, switched_at}``, or None."""
        return self._state.find_one({"_id": ACTIVE_ID})

    def get_version(self, version: str) -> dict[str, Any] | None:
        """The `model_versions` document of `version`, or None."""
        return self._versions.find_one({"_id": version})

    def list_versions(self) -> list[dict[str, Any]]:
        """All version documents, newest first, each with an extra ``active: bool``."""
        active = self.active_version()
        docs = list(self._versions.find({}).sort([("created_at", DESCENDING), ("_id", DESCENDING)]))
        for doc in docs:
            doc["active"] = doc["_id"] == active
        return docs

    # ---------------------------------------------------------------- publish

    def publish(self, payload: PublishPayload, *, batch_size: int = 5000) -> dict[str, Any]:
        """Write every collection of `payload.version` and mark it ready (not active).

        Rerunning with the same version drops whatever that version has (an incomplete or a
        ready-but-inactive copy) and rewrites it. The active version is never overwritten.

        Returns:
            ``{version, counts, seconds, replaced}``.

        Raises:
            PublishError: bad version name or payload, the version is active, or verification
                failed (the version then stays ``building`` for `cleanup_incomplete`).
        """
        if batch_size < 1:
            raise ValueError("batch_size must be >= 1")
        version = check_version(payload.version)
        started = time.perf_counter()
        generated_at = _utc(payload.generated_at)

        # Validate and convert everything before touching the database.
        user_ids = _str_ids("user_ids", payload.user_ids)
        item_ids_list = _str_ids("item_ids", payload.item_ids)
        item_ids = np.asarray(item_ids_list, dtype=object)
        n_items = len(item_ids_list)
        rec_idx = np.asarray(payload.rec_items)
        rec_scores = np.asarray(payload.rec_scores)
        sim_idx = np.asarray(payload.similar_items)
        sim_scores = np.asarray(payload.similar_scores)
        rec_len = _check_ranked("rec_items", rec_idx, rec_scores, n_items)
        sim_len = _check_ranked("similar_items", sim_idx, sim_scores, n_items)
        pop_idx = np.asarray(payload.popular_items).reshape(1, -1)
        pop_scores = np.asarray(payload.popular_scores).reshape(1, -1)
        pop_len = _check_ranked("popular_items", pop_idx, pop_scores, n_items)
        user_factors = _factors("user_factors", payload.user_factors)
        item_factors = _factors("item_factors", payload.item_factors)
        explain = _check_explain(payload.rec_explain_items, payload.rec_explain_scores,
                                 rec_idx.shape, n_items)
        attributes = _attribute_values(payload.item_attributes, n_items)

        if self.active_version() == version:
            raise PublishError(f"version {version!r} is active; publish under a new version")

        existing = self._versions.find_one({"_id": version}, {"status": 1})
        replaced = existing is not None
        if replaced:
            logger.info("rewriting version %s (was %s)", version, existing.get("status"))

        counts = {
            "users": len(user_ids),
            "items": n_items,
            "recs": len(user_ids),
            "similar": n_items,
            "popular": int(pop_len[0]),
            "factors": int(user_factors.shape[1]),
        }
        features = {"item_attributes": sorted(attributes), "explanations": explain is not None}
        # The version document goes first (status building), so a crash at any later point
        # leaves a record that cleanup_incomplete() can find.
        self._versions.replace_one(
            {"_id": version},
            {
                "_id": version,
                "status": STATUS_BUILDING,
                "created_at": datetime.now(UTC),
                "ready_at": None,
                "generated_at": generated_at,
                "counts": counts,
                "publish_seconds": None,
                "metadata": payload.metadata,
                "features": features,
            },
            upsert=True,
        )
        if self.active_version() == version:  # activated between our check and the write
            raise PublishError(f"version {version!r} became active during publish")
        self._drop_collections(version)
        self._ensure_version_indexes()

        base = {"model_version": version, "generated_at": generated_at}
        written = {
            recs_collection(version): self._insert(
                recs_collection(version),
                _ranked_docs(user_ids, rec_idx, rec_scores, rec_len, item_ids, base,
                             attributes=attributes,
                             explain_idx=explain[0] if explain else None,
                             explain_scores=explain[1] if explain else None),
                batch_size,
            ),
            similar_collection(version): self._insert(
                similar_collection(version),
                _ranked_docs(item_ids_list, sim_idx, sim_scores, sim_len, item_ids, base,
                             attributes=attributes),
                batch_size,
            ),
            popular_collection(version): self._insert(
                popular_collection(version),
                _ranked_docs([POPULAR_ID], pop_idx, pop_scores, pop_len, item_ids, base,
                             attributes=attributes),
                batch_size,
            ),
            user_embeddings_collection(version): self._insert(
                user_embeddings_collection(version),
                _embedding_docs(user_ids, user_factors, version),
                batch_size,
            ),
            item_embeddings_collection(version): self._insert(
                item_embeddings_collection(version),
                _embedding_docs(item_ids_list, item_factors, version),
                batch_size,
            ),
        }
        expected = {
            recs_collection(version): len(user_ids),
            similar_collection(version): n_items,
            popular_collection(version): 1,
            user_embeddings_collection(version): len(user_ids),
            item_embeddings_collection(version): n_items,
        }
        self._verify(version, expected, written, user_ids, rec_idx, rec_len, item_ids,
                     user_factors)

        seconds = time.perf_counter() - started
        result = self._versions.update_one(
            {"_id": version, "status": STATUS_BUILDING},
            {"$set": {"status": STATUS_READY, "ready_at": datetime.now(UTC),
                      "publish_seconds": seconds}},
        )
        if result.matched_count != 1:
            raise PublishError(f"version {version!r} changed state during publish")
        logger.info("published version %s: %s in %.2fs", version, counts, seconds)
        return {"version": version, "counts": counts, "seconds": seconds, "replaced": replaced}

    def _insert(self, name: str, docs: Iterable[dict[str, Any]], batch_size: int) -> int:
        """Bulk-insert `docs` in unordered batches of `batch_size`.

        One batch is in flight on a worker thread while the next one is built, so building
        documents in Python overlaps with the server writing the previous batch. The first
        error (connection loss, write error) propagates and stops the publish.
        """
        coll = self.db[name]
        # Create explicitly so an empty version still has all its collections.
        self.db.create_collection(name)
        n = 0
        with ThreadPoolExecutor(max_workers=1, thread_name_prefix="publish") as pool:
            pending: Future[Any] | None = None
            try:
                for batch in _batches(docs, batch_size):
                    if pending is not None:
                        n += len(pending.result().inserted_ids)
                    pending = pool.submit(coll.insert_many, batch, ordered=False)
                if pending is not None:
                    n += len(pending.result().inserted_ids)
            except BaseException:
                if pending is not None:
                    pending.cancel()
                raise
        return n

    def _verify(
        self,
        version: str,
        expected: dict[str, int],
        written: dict[str, int],
        user_ids: list[str],
        rec_idx: np.ndarray,
        rec_len: np.ndarray,
        item_ids: np.ndarray,
        user_factors: np.ndarray,
    ) -> None:
        """Check counts, the `_id` index of every collection, and a sample of users."""
        for name, n in expected.items():
            # The collection is new and only this publish writes it, so the metadata count is
            # exact; count_documents({}) scans every document (seconds per 10k on secantusd-py).
            stored = self.db[name].estimated_document_count()
            if written[name] != n or stored != n:
                raise PublishError(
                    f"version {version!r}: {name} holds {stored} documents "
                    f"(inserted {written[name]}), expected {n}"
                )
            keys = [dict(ix["key"]) for ix in self.db[name].list_indexes()]
            if {"_id": 1} not in keys:
                raise PublishError(f"version {version!r}: {name} has no _id index ({keys})")
        if not user_ids:
            return
        rng = np.random.default_rng(len(user_ids))
        rows = sorted({0, len(user_ids) - 1,
                       *rng.integers(0, len(user_ids), VERIFY_SAMPLE).tolist()})
        sample = [user_ids[r] for r in rows]
        recs = {d["_id"]: d for d in self.db[recs_collection(version)].find(
            {"_id": {"$in": sample}}, {"items.item_id": 1})}
        embs = {d["_id"]: d for d in self.db[user_embeddings_collection(version)].find(
            {"_id": {"$in": sample}})}
        for row, user in zip(rows, sample, strict=True):
            doc = recs.get(user)
            want = item_ids[rec_idx[row, : rec_len[row]]].tolist()
            got = [it["item_id"] for it in doc["items"]] if doc else None
            if got != want:
                raise PublishError(f"version {version!r}: sample check failed for user {user!r}")
            emb = embs.get(user)
            if emb is None or not np.array_equal(
                emb["vector"].as_vector(return_numpy=True).data, user_factors[row]
            ):
                raise PublishError(
                    f"version {version!r}: embedding check failed for user {user!r}"
                )

    def _ensure_version_indexes(self) -> None:
        self._versions.create_index([("status", ASCENDING), ("created_at", DESCENDING)])

    def _drop_collections(self, version: str) -> None:
        for name in version_collections(version):
            self.db.drop_collection(name)

    # ---------------------------------------------------------------- switch

    def activate(self, version: str) -> str | None:
        """Point the API at `version` (one atomic write of the pointer).

        Returns:
            The previously active version (None on the first activation).

        Raises:
            PublishError: the version is unknown or not ready; the pointer is left alone.
        """
        doc = self._versions.find_one({"_id": version}, {"status": 1})
        if doc is None:
            raise PublishError(f"cannot activate unknown version {version!r}")
        if doc["status"] != STATUS_READY:
            raise PublishError(
                f"cannot activate version {version!r}: status is {doc['status']!r}, not 'ready'"
            )
        current = self.active_version()
        if current == version:
            return current
        before = self._state.find_one_and_update(
            {"_id": ACTIVE_ID},
            {"$set": {"version": version, "previous": current, "switched_at": datetime.now(UTC)}},
            upsert=True,
            return_document=ReturnDocument.BEFORE,
        )
        previous = before["version"] if before else None
        # A concurrent drop_version()/publish() may have taken the version out of 'ready'
        # between our check and the write: put the pointer back rather than serve a gap.
        after = self._versions.find_one({"_id": version}, {"status": 1})
        if after is None or after["status"] != STATUS_READY:
            if previous:
                self._state.update_one(
                    {"_id": ACTIVE_ID, "version": version},
                    {"$set": {"version": previous, "previous": None,
                              "switched_at": datetime.now(UTC)}},
                )
            else:
                self._state.delete_one({"_id": ACTIVE_ID, "version": version})
            raise PublishError(f"version {version!r} changed state while being activated")
        logger.info("activated version %s (previous: %s)", version, previous)
        return previous

    def rollback(self) -> str:
        """Re-activate the previously active version; returns it.

        Raises:
            PublishError: there is no previous version, or it is no longer ready.
        """
        state = self.active_state()
        previous = state.get("previous") if state else None
        if not previous:
            raise PublishError("no previous version to roll back to")
        self.activate(previous)
        return previous

    # ---------------------------------------------------------------- drop

    def drop_version(self, version: str) -> None:
        """Drop one non-active version (its collections, then its document).

        Raises:
            PublishError: the version is active.
        """
        if self.active_version() == version:
            raise PublishError(f"refusing to drop the active version {version!r}")
        self._versions.update_one({"_id": version}, {"$set": {"status": STATUS_DROPPING}})
        if self.active_version() == version:  # activated meanwhile: put it back
            self._versions.update_one({"_id": version}, {"$set": {"status": STATUS_READY}})
            raise PublishError(f"refusing to drop the active version {version!r}")
        self._drop_collections(version)
        self._versions.delete_one({"_id": version})
        logger.info("dropped version %s", version)

    def prune(self, keep: int) -> list[str]:
        """Drop the oldest ready versions beyond the newest `keep`; never the active one.

        The active version is kept in addition when it is not among the newest `keep`.
        Keep at least 2 so the previous version stays available for `rollback()` and for API
        workers whose cached pointer is up to `active_poll_seconds` old.

        Returns:
            The dropped versions, oldest last.
        """
        if keep < 1:
            raise ValueError("keep must be >= 1")
        active = self.active_version()
        ready = [
            d["_id"]
            for d in self._versions.find({"status": STATUS_READY}, {"_id": 1}).sort(
                [("created_at", DESCENDING), ("_id", DESCENDING)]
            )
        ]
        dropped = []
        for version in ready[keep:]:
            if version == active:
                continue
            self.drop_version(version)
            dropped.append(version)
        return dropped

    def cleanup_incomplete(self) -> list[str]:
        """Drop versions left ``building`` (a crashed publish) or ``dropping`` (a crashed prune).

        Run it when no publish is in progress (for example at the start of the batch flow).

        Returns:
            The versions removed.
        """
        active = self.active_version()
        removed = []
        for doc in self._versions.find(
            {"status": {"$in": [STATUS_BUILDING, STATUS_DROPPING]}}, {"_id": 1}
        ):
            version = doc["_id"]
            if version == active:  # cannot happen through this API; never drop what serves
                logger.warning("active version %s has status building; leaving it", version)
                continue
            self._drop_collections(version)
            self._versions.delete_one({"_id": version})
            removed.append(version)
            logger.info("cleaned up incomplete version %s", version)
        return removed
