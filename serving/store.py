"""The MongoDB serving store: versioned collections plus one pointer document.

A publish writes a complete, immutable set of collections for one model version; the API serves
whichever version the pointer names. Switching (and rolling back) is one atomic write of the
pointer (`recsys/versions.py`, shared with the online feature store); nothing is renamed and
`$out` is never used (see PITFALLS.md, "MongoDB serving"). Collection names come from
`recsys/mongo.py`. Only `serving.publish.publish_model` switches what is served.

Document shapes (every serving document carries `model_version`; datetimes are UTC):

``model_versions`` -- one document per version::

    {_id: <version>, status: "building" | "ready" | "dropping",
     created_at: datetime, ready_at: datetime | None, generated_at: datetime,
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
Publishing inserts unordered batches of ``batch_size`` documents, building the next batch while
the previous one is written, then verifies counts (acknowledged inserts and the collection's
metadata count), the ``_id`` index of every collection and a sample of ``VERIFY_SAMPLE`` users
(list and embedding) before marking the version ready. All API reads are by ``_id``, so the
default ``_id`` index is the only one the collections need; ``model_versions`` gets an index on
``(status, created_at)`` for listing and pruning.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from typing import Any

import numpy as np
from pymongo.database import Database

from recsys.errors import PublishError
from recsys.mongo import (
    ACTIVE_POINTER_ID,
    MODEL_VERSIONS,
    SERVING_KINDS,
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
from serving.documents import VersionDocuments, batches, build_documents
from serving.payload import PublishPayload

logger = logging.getLogger(__name__)

VERIFY_SAMPLE = 32  # users checked against the payload after writing


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

    # ---------------------------------------------------------------- publish

    def publish(self, payload: PublishPayload, *, batch_size: int = 5000,
                progress: ProgressCallback | None = None) -> dict[str, Any]:
        """Write every collection of `payload.version` and mark it ready (not active).

        Rerunning with the same version drops whatever that version has (an incomplete or a
        ready-but-inactive copy) and rewrites it. The active version is never overwritten.
        `progress` is told the documents written after each batch (steps ``publish <kind>``).

        Returns:
            ``{version, counts, seconds, replaced}``.

        Raises:
            InvalidId: the version breaks the id rule.
            PublishError: bad payload, the version is active, or verification failed (the
                version then stays ``building`` for `cleanup_incomplete`).
        """
        if batch_size < 1:
            raise ValueError("batch_size must be >= 1")
        started = time.perf_counter()
        docs = build_documents(payload)  # validates everything before touching the database
        version = docs.version
        replaced = self.versions.begin(version, {
            "generated_at": docs.generated_at, "counts": docs.counts, "publish_seconds": None,
            "metadata": payload.metadata, "features": docs.features,
            "recommendations": docs.recommendations})
        written = {serving_collection(kind, version): self._insert(
            serving_collection(kind, version), docs.documents(kind), batch_size,
            progress=progress, step=f"publish {kind}", total=docs.expected.get(kind))
            for kind in SERVING_KINDS}
        expected = {serving_collection(kind, version): n for kind, n in docs.expected.items()}
        self.versions.verify_counts(version, expected, written)
        self._verify_sample(docs)
        seconds = time.perf_counter() - started
        self.versions.mark_ready(version, {"publish_seconds": seconds})
        logger.info("published version %s: %s in %.2fs", version, docs.counts, seconds)
        return {"version": version, "counts": docs.counts, "seconds": seconds,
                "replaced": replaced}

    def _insert(self, name: str, docs: Iterable[dict[str, Any]], batch_size: int, *,
                progress: ProgressCallback | None = None, step: str = "",
                total: int | None = None) -> int:
        """Bulk-insert `docs` in unordered batches of `batch_size`.

        One batch is in flight on a worker thread while the next one is built, so building
        documents in Python overlaps with the server writing the previous batch. The first
        error (connection loss, write error) propagates and stops the publish.
        """
        coll = self.db[name]
        n = 0
        with ThreadPoolExecutor(max_workers=1, thread_name_prefix="publish") as pool:
            pending: Future[Any] | None = None
            try:
                for batch in batches(docs, batch_size):
                    if pending is not None:
                        n += len(pending.result().inserted_ids)
                        report_progress(progress, step, n, total)
                    pending = pool.submit(coll.insert_many, batch, ordered=False)
                if pending is not None:
                    n += len(pending.result().inserted_ids)
                    report_progress(progress, step, n, total)
            except BaseException:
                if pending is not None:
                    pending.cancel()
                raise
        return n

    def _verify_sample(self, docs: VersionDocuments) -> None:
        """Compare a sample of users (list and embedding) with the payload."""
        version, user_ids = docs.version, docs.user_ids
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
            want = docs.item_ids[docs.rec_idx[row, : docs.rec_len[row]]].tolist()
            got = [it["item_id"] for it in doc["items"]] if doc else None
            if got != want:
                raise PublishError(f"version {version!r}: sample check failed for user {user!r}")
            emb = embs.get(user)
            if emb is None or not np.array_equal(
                emb["vector"].as_vector(return_numpy=True).data, docs.user_factors[row]
            ):
                raise PublishError(
                    f"version {version!r}: embedding check failed for user {user!r}"
                )

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

    def cleanup_incomplete(self) -> list[str]:
        """Drop versions left ``building`` (a crashed publish) or ``dropping`` (a crashed prune).

        Run it while holding the publish lock, so no publish is in progress.

        Returns:
            The versions removed.
        """
        return self.versions.cleanup_incomplete()
