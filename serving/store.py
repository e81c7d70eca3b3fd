"""The MongoDB serving store: versioned collections plus one pointer document.

A publish writes a complete, immutable set of collections for one model version; the API serves
whichever version the pointer names. Switching (and rolling back) is one atomic write of the
pointer (`recsys/versions.py`, shared with the online feature store); nothing is renamed and
`$out` is never used (both lock collections and break open cursors). Collection names come from
`recsys/mongo.py`. Only `serving.publish.publish_model` switches what is served.

Document shapes (every serving document carries `model_version`; datetimes are UTC):

``model_versions`` -- one document per version::

    {_id: <version>, status: "building" | "ready" | "dropping" | "abandoned",
     created_at: datetime, ready_at: datetime | None, generated_at: datetime,
     attempt: str,                # the publish attempt writing it (serving/version_writer.py)
     counts: {users, items, recs, similar, popular, factors},
     publish_seconds: float | None,
     metadata: {...},             # the model's metadata: params, metrics, feature_snapshot, ...
     features: {item_attributes: [names], explanations: bool},
     recommendations: {lists, slots, items, recommended_items,   # serving/rec_stats.py
                       genres: [{genre, items, recommended_items, slots}] | None}}

``serving_state`` -- the pointer, a single document (plus the publish lock, `serving/lock.py`)::

    {_id: "active", version: <version>, previous: <version> | None, switched_at: datetime}

``recs_<version>`` -- one document per user (lookup by the default ``_id`` index)::

    {_id: <user_id>, model_version, generated_at,
     items: [{item_id: str, score: float, rank: int,
              <attribute>: value, ...,                       # payload.item_attributes, e.g. genres
              because: [{item_id: str, contribution: float}]}]}  # only with explanations

``similar_<version>`` -- one document per item, same shape with ``_id: <item_id>`` (the item
itself excluded).

``popular_<version>`` -- one document
``{_id: "popular", model_version, generated_at, items: [...]}``
(the fallback list for unknown users).

``user_embeddings_<version>`` / ``item_embeddings_<version>``::

    {_id: <id>, model_version, dim: int, vector: Binary(subtype 9, FLOAT32 vector)}

Ranks start at 1; ``-1`` padding in the payload is dropped, so a list may be shorter than N.
Publishing inserts unordered batches of ``batch_size`` documents (`insert_documents`), building
the next batch while the previous one is written, then verifies counts (acknowledged inserts and
the collection's metadata count), the ``_id`` index of every collection and a sample of
``VERIFY_SAMPLE`` users (list and embedding, `verify_user_sample`) before marking the version
ready. The one sequence that drives these primitives is in `serving/version_writer.py`
(`write_version`, what `publish_model` uses, per user partition, the partitions written by
parallel writers into the same collections; `write_payload_version` for a whole in-memory
`PublishPayload`, in tests and benchmarks). All API reads are by
``_id``, so the default ``_id`` index is the only one the collections need (behind a mongos the
collections are sharded on hashed ``_id``, `recsys.versions`); ``model_versions`` gets an index
on ``(status, created_at)`` for listing and pruning.
"""

from __future__ import annotations

import gc
import logging
import time
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from datetime import datetime
from typing import Any

import numpy as np
from pymongo.collection import Collection
from pymongo.database import Database
from pymongo.errors import BulkWriteError

from recsys.errors import PublishError
from recsys.mongo import (
    ACTIVE_POINTER_ID,
    MODEL_VERSIONS,
    SERVING_STATE,
    open_database,
    recs_collection,
    serving_collection,
    serving_collections,
    user_embeddings_collection,
)
from recsys.progress import ProgressCallback, report_progress
from recsys.settings import Settings
from recsys.versions import VersionedCollections
from serving.documents import UserDocuments, batches

logger = logging.getLogger(__name__)

VERIFY_SAMPLE = 32  # users checked against the payload after writing
DUPLICATE_KEY = 11000


def serving_versions(db: Database) -> VersionedCollections:
    """The serving store's versions in `db` (model_versions + the `active` pointer)."""
    return VersionedCollections(
        db, registry=MODEL_VERSIONS, pointer=SERVING_STATE, pointer_id=ACTIVE_POINTER_ID,
        pointer_field="version", collections=serving_collections, kind="model version",
        error=PublishError)


def referenced_snapshots(db: Database) -> set[str]:
    """Feature snapshot ids that the model versions in the serving store were trained on.

    Every version document counts, whatever its status (a version being written will need its
    snapshot too), so pass the result as the protect set of snapshot retention.
    """
    docs = db[MODEL_VERSIONS].find({"metadata.feature_snapshot": {"$exists": True}},
                                   {"metadata.feature_snapshot": 1})
    return {str(doc["metadata"]["feature_snapshot"]) for doc in docs
            if doc.get("metadata", {}).get("feature_snapshot")}


@contextmanager
def open_store(settings: Settings) -> Iterator[MongoServingStore]:
    """`with open_store(settings) as store:` on `settings.mongodb_db`; closes the client after."""
    with open_database(settings) as db:
        yield MongoServingStore(db)


class MongoServingStore:
    """Versioned serving collections in one MongoDB database (see the module docstring).

    Args:
        db: a sync pymongo database; the store reads datetimes back as aware UTC.
    """

    def __init__(self, db: Database) -> None:
        self.versions = serving_versions(db)
        self.db: Database = self.versions.db

    # ---------------------------------------------------------------- reads

    def active_version(self) -> str | None:
        """The version the pointer names, or None before the first activation."""
        return self.versions.active()

    def previous_version(self) -> str | None:
        """The version that was active before the last switch (what a rollback restores)."""
        return self.versions.previous()

    def active_state(self) -> dict[str, Any] | None:
        """The pointer document ``{_id, version, previous, switched_at}``, or None."""
        return self.versions.pointer_doc()

    def get_version(self, version: str) -> dict[str, Any] | None:
        """The `model_versions` document of `version`, or None."""
        return self.versions.get(version)

    def is_ready(self, version: str) -> bool:
        """True when `version` is written, verified and can be activated."""
        return self.versions.is_ready(version)

    def list_versions(self) -> list[dict[str, Any]]:
        """All version documents, newest first, each with an extra ``active: bool``."""
        return self.versions.list_versions()

    def verify_active(self) -> dict[str, Any]:
        """Check what is served (for health checks): a version is active, ready, and has all
        its collections.

        Returns:
            ``{version, users}`` (users: documents in its recommendations collection).

        Raises:
            PublishError: nothing is active, or the active version is not ready or lacks a
                collection.
        """
        version = self.active_version()
        if version is None:
            raise PublishError(f"no active model version in database {self.db.name}")
        if not self.is_ready(version):
            raise PublishError(f"active version {version} is not 'ready' "
                               f"({self.get_version(version)})")
        present = set(self.db.list_collection_names())
        missing = [name for name in serving_collections(version) if name not in present]
        if missing:
            raise PublishError(f"active version {version} lacks collections {missing}")
        return {"version": version,
                "users": self.db[recs_collection(version)].estimated_document_count()}

    # ---------------------------------------------------------------- writing a version

    def begin_version(self, version: str, fields: dict[str, Any]) -> bool:
        """Start writing `version`: its `model_versions` document (``building``, plus `fields`)
        and fresh empty collections (sharded on hashed ``_id`` behind a mongos).

        Returns:
            True when a document of `version` existed that a cleanup had not abandoned
            (it is rewritten).

        Raises:
            InvalidId / PublishError: a bad id, or the version is active.
        """
        return self.versions.begin(version, fields)

    def verify_counts(self, version: str, expected: dict[str, int],
                      written: dict[str, int]) -> None:
        """Check that every collection of `version` holds what its writers stored.

        Args:
            version: the version being written.
            expected: documents per kind (``recs``, ...) the version must hold.
            written: documents per kind the writers stored (acknowledged inserts, plus those a
                retried part found already there).

        Raises:
            PublishError: a count or an index is wrong (the version stays ``building``).
        """
        self.versions.verify_counts(
            version, {serving_collection(k, version): n for k, n in expected.items()},
            {serving_collection(k, version): n for k, n in written.items()})

    def mark_ready(self, version: str, *, started: float,
                   fields: dict[str, Any] | None = None) -> float:
        """Mark the written and verified `version` ready (it can then be activated).

        Args:
            version: the version.
            started: `time.perf_counter()` when its publish began.
            fields: more fields of the version document to set with the ready flag.

        Returns:
            The seconds the publish took (recorded as ``publish_seconds``).
        """
        seconds = time.perf_counter() - started
        self.versions.mark_ready(version, {**(fields or {}), "publish_seconds": seconds})
        return seconds

    # ---------------------------------------------------------------- switch and drop

    def activate(self, version: str) -> str | None:
        """Point the API at `version` (one atomic write of the pointer).

        Call it through `serving.publish.publish_model`, which holds the publish lock and
        switches the online features with the model.

        Returns:
            The previously active version (None on the first activation; `version` itself
            when it already was active).

        Raises:
            PublishError: the version is unknown or not ready; the pointer is left alone.
        """
        return self.versions.switch(version)

    def prune(self, keep: int, protect: Iterable[str] = ()) -> list[str]:
        """Drop the oldest ready versions beyond the newest `keep`; never the active one.

        The active version (and any in `protect`) is kept in addition when it is not among the
        newest `keep`. Keep at least 2 so the previous version stays available for a rollback
        and for API workers whose cached pointer is up to `active_poll_seconds` old.

        Returns:
            The dropped versions, newest first.
        """
        return self.versions.prune(keep, protect)

    def cleanup_incomplete(self, *, now: datetime | None = None) -> list[str]:
        """Abandon versions left ``building`` (a crashed publish) or ``dropping`` (a crashed
        prune): their collections are dropped, now and by every later cleanup while their
        ``abandoned`` document is kept (`recsys.versions.ABANDONED_KEEP`).

        Run it while holding the publish lock, so no publish is in progress; `now` is the
        clock the tombstones' age is read on (default: now, UTC).

        Returns:
            The versions abandoned by this call.
        """
        return self.versions.cleanup_incomplete(now=now)


# -------------------------------------------------------------------- writing documents

@contextmanager
def _no_cyclic_gc() -> Iterator[None]:
    """Pause the cyclic garbage collector while documents are built and written.

    A batch in flight holds hundreds of thousands of small dicts; every collector pass walks
    them all (measured: 40-70 % more CPU to build the documents). Serving documents hold no
    reference cycles, so reference counting frees them as soon as a batch is written.
    """
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


def _insert_batch(coll: Collection, batch: list[dict[str, Any]], existing_ok: bool
                  ) -> tuple[int, int]:
    """Insert one unordered batch: (inserted, already there).

    With `existing_ok`, documents whose ``_id`` is already in the collection are skipped (a
    duplicate-key error only): a retried partition finds what its first attempt wrote.
    """
    try:
        return len(coll.insert_many(batch, ordered=False).inserted_ids), 0
    except BulkWriteError as exc:
        errors = exc.details.get("writeErrors", [])
        if not existing_ok or not errors or any(e.get("code") != DUPLICATE_KEY for e in errors):
            raise
        return int(exc.details.get("nInserted", 0)), len(errors)


def insert_documents(coll: Collection, docs: Iterable[dict[str, Any]], batch_size: int, *,
                     progress: ProgressCallback | None = None, step: str = "",
                     total: int | None = None, existing_ok: bool = False,
                     before_batch: Callable[[], None] | None = None) -> tuple[int, int]:
    """Bulk-insert `docs` into `coll` in unordered batches of `batch_size`.

    One batch is in flight on a worker thread while the next one is built, so building
    documents in Python overlaps with the server writing the previous batch. The first
    error (connection loss, write error) propagates and stops the publish.

    Args:
        coll: one collection of the version being written.
        docs: its documents, built lazily.
        batch_size: documents per `insert_many`.
        progress: told (step, documents so far, total) after each batch.
        step, total: for `progress`.
        existing_ok: skip documents whose ``_id`` is already stored (idempotent retries);
            every document is a pure function of the model's files and the version's
            ``generated_at``, so one already there is the one this call would write.
        before_batch: called before each batch is sent; it raises to stop the writes (a
            partition checks that its publish attempt is still the one being written).

    Returns:
        (documents inserted now, documents found already there).
    """
    inserted = existing = 0
    with _no_cyclic_gc(), ThreadPoolExecutor(max_workers=1,
                                             thread_name_prefix="publish") as pool:
        pending: Future[tuple[int, int]] | None = None
        try:
            for batch in batches(docs, batch_size):
                if pending is not None:
                    new, old = pending.result()
                    inserted, existing = inserted + new, existing + old
                    report_progress(progress, step, inserted + existing, total)
                if before_batch is not None:
                    before_batch()
                pending = pool.submit(_insert_batch, coll, batch, existing_ok)
            if pending is not None:
                new, old = pending.result()
                inserted, existing = inserted + new, existing + old
                report_progress(progress, step, inserted + existing, total)
        except BaseException:
            if pending is not None:
                pending.cancel()
            raise
    return inserted, existing


def verify_user_sample(db: Database, users: UserDocuments) -> None:
    """Compare a sample of `users` (list and embedding) as stored with their arrays.

    Raises:
        PublishError: a sampled user's list or vector differs or is missing.
    """
    version, user_ids = users.version, users.user_ids
    if not user_ids:
        return
    rng = np.random.default_rng(len(user_ids))
    rows = sorted({0, len(user_ids) - 1,
                   *rng.integers(0, len(user_ids), VERIFY_SAMPLE).tolist()})
    sample = [user_ids[r] for r in rows]
    recs = {d["_id"]: d for d in db[recs_collection(version)].find(
        {"_id": {"$in": sample}}, {"items.item_id": 1})}
    embs = {d["_id"]: d for d in db[user_embeddings_collection(version)].find(
        {"_id": {"$in": sample}})}
    for row, user in zip(rows, sample, strict=True):
        doc = recs.get(user)
        want = users.item_ids[users.rec_idx[row, : users.rec_len[row]]].tolist()
        got = [it["item_id"] for it in doc["items"]] if doc else None
        if got != want:
            raise PublishError(f"version {version!r}: sample check failed for user {user!r}")
        emb = embs.get(user)
        if emb is None or not np.array_equal(
            emb["vector"].as_vector(return_numpy=True).data, users.user_factors[row]
        ):
            raise PublishError(f"version {version!r}: embedding check failed for user {user!r}")
