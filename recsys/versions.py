"""Versioned collections behind one pointer document: the primitive of both MongoDB stores.

A version (a model version of the serving store, a snapshot of the online feature store) is
written into its own new collections, verified, marked ready, and only then made visible by one
atomic write of a pointer document; readers follow the pointer, so they never see a partial
version, and switching back is the same one write. Nothing is renamed and `$out` is never used.

The life of a version, as recorded in its registry document::

    {_id: <version>, status: "building" | "ready" | "dropping" | "abandoned",
     created_at: datetime, ready_at: datetime | None, abandoned_at: datetime (abandoned only),
     ...fields of the store}

- `begin`: registry document in status ``building`` (first, so a crash at any later point leaves
  a record), then fresh empty collections (`create_version_collections`: behind a mongos they
  are sharded on hashed ``_id``, see `recsys.mongo.shard_collections`);
- `verify_counts`: every collection holds exactly what was inserted and has its ``_id`` index;
- `mark_ready`: ``building`` -> ``ready`` (refused when another writer changed the state);
- `switch`: the pointer ``{_id, <field>: <version>, previous, switched_at}`` names the version;
- `prune`: drop ready versions beyond the newest N, never the active one nor a protected one;
- `cleanup_incomplete`: abandon what a crash left (``building``/``dropping``, or any other
  status that is not ``ready``): status ``abandoned`` first, then its collections dropped; run it
  while holding the publish lock, so no write of this process is in progress. The abandoned
  document stays as a tombstone for `ABANDONED_KEEP`, and every cleanup drops its collections
  again: a writer of the crashed attempt on another machine (a late Dask part) may have had one
  batch in flight, and MongoDB recreates a dropped collection on insert. Without the tombstone
  such a collection would belong to no version and nothing would ever drop it.

Datetimes are aware UTC. Versions follow the id rule of `recsys/ids.py`.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from datetime import UTC, datetime, timedelta
from typing import Any

from pymongo import ASCENDING, DESCENDING, ReturnDocument
from pymongo.database import Database

from recsys.errors import RecsysError
from recsys.ids import check_id
from recsys.mongo import CODEC_OPTIONS, is_mongos, shard_collections

logger = logging.getLogger(__name__)

STATUS_BUILDING = "building"
STATUS_READY = "ready"
STATUS_DROPPING = "dropping"
STATUS_ABANDONED = "abandoned"

#: How long an abandoned version's document outlives its cleanup. A late part checks the
#: status before each batch, so at most one batch per part can land after the cleanup (a
#: publish driver that lost its lock may write its item side until `mark_ready` refuses it);
#: a day covers any writer that is merely slow, not only the usual seconds.
ABANDONED_KEEP = timedelta(days=1)

_NEWEST_FIRST = [("created_at", DESCENDING), ("_id", DESCENDING)]


class VersionedCollections:
    """Versions of one store in `db`: a registry collection, per-version collections, a pointer.

    Args:
        db: a sync pymongo database (re-opened with aware-UTC codec options).
        registry: the collection of registry documents.
        pointer: the collection holding the pointer document.
        pointer_id: the pointer document's `_id`.
        pointer_field: the pointer's field naming the active version.
        collections: version -> the names of its collections (checks the id).
        kind: what a version is called in messages and id checks ("model version").
        error: the exception class this store raises.
    """

    def __init__(self, db: Database, *, registry: str, pointer: str, pointer_id: str,
                 pointer_field: str, collections: Callable[[str], list[str]], kind: str,
                 error: type[RecsysError]) -> None:
        self.db: Database = db.with_options(codec_options=CODEC_OPTIONS)
        self.registry = self.db[registry]
        self.pointer = self.db[pointer]
        self.pointer_id = pointer_id
        self.pointer_field = pointer_field
        self.collections = collections
        self.kind = kind
        self.error = error
        self._sharded: bool | None = None

    @property
    def sharded(self) -> bool:
        """The client talks to a mongos: new collections are sharded (asked once)."""
        if self._sharded is None:
            self._sharded = is_mongos(self.db)
            if self._sharded:
                logger.info("MongoDB is a sharded cluster (mongos): %s collections are "
                            "sharded on hashed _id", self.kind)
        return self._sharded

    # ---------------------------------------------------------------- reads

    def pointer_doc(self) -> dict[str, Any] | None:
        """The pointer ``{_id, <pointer_field>, previous, switched_at}``, or None."""
        return self.pointer.find_one({"_id": self.pointer_id})

    def active(self) -> str | None:
        """The version the pointer names (None before the first switch)."""
        doc = self.pointer.find_one({"_id": self.pointer_id}, {self.pointer_field: 1})
        return doc.get(self.pointer_field) if doc else None

    def previous(self) -> str | None:
        """The version that was active before the last switch."""
        doc = self.pointer.find_one({"_id": self.pointer_id}, {"previous": 1})
        return doc.get("previous") if doc else None

    def get(self, version: str) -> dict[str, Any] | None:
        """The registry document of `version`, or None."""
        return self.registry.find_one({"_id": version})

    def is_ready(self, version: str) -> bool:
        return self.registry.find_one({"_id": version, "status": STATUS_READY},
                                      {"_id": 1}) is not None

    def list_versions(self) -> list[dict[str, Any]]:
        """Every registry document, newest first, each with an extra ``active: bool``."""
        active = self.active()
        docs = list(self.registry.find({}).sort(_NEWEST_FIRST))
        for doc in docs:
            doc["active"] = doc["_id"] == active
        return docs

    # ---------------------------------------------------------------- write

    def begin(self, version: str, fields: dict[str, Any]) -> bool:
        """Start (or restart) writing `version`: registry document ``building``, empty collections.

        Args:
            version: the version id (must follow the id rule).
            fields: the store's own fields of the registry document.

        Returns:
            True when a document of `version` existed that a cleanup had not abandoned (a
            rewrite of what it holds; an abandoned version holds nothing).

        Raises:
            InvalidId: `version` breaks the id rule.
            error: `version` is the active one (it is immutable while served).
        """
        check_id(version, kind=self.kind)
        if self.active() == version:
            raise self.error(f"{self.kind} {version!r} is active; write under a new id")
        existing = self.registry.find_one({"_id": version}, {"status": 1})
        if existing is not None:
            logger.info("rewriting %s %s (was %s)", self.kind, version, existing.get("status"))
        self.registry.replace_one(
            {"_id": version},
            {"_id": version, "status": STATUS_BUILDING, "created_at": datetime.now(UTC),
             "ready_at": None, **fields},
            upsert=True,
        )
        if self.active() == version:  # switched to between our check and the write
            raise self.error(f"{self.kind} {version!r} became active while being written")
        self.registry.create_index([("status", ASCENDING), ("created_at", DESCENDING)])
        create_version_collections(self.db, self.collections(version), sharded=self.sharded)
        return existing is not None and existing.get("status") != STATUS_ABANDONED

    def verify_counts(self, version: str, expected: dict[str, int],
                      inserted: dict[str, int] | None = None) -> None:
        """Check that each collection holds `expected[name]` documents and has its `_id` index.

        Raises:
            error: a count or an index is wrong (the version stays ``building``).
        """
        for name, n in expected.items():
            # The collection is new and only this publish fills it, so the metadata count is
            # exact on one node; count_documents({}) scans every document (seconds per 10k on
            # secantusd-py). Behind a mongos the metadata count may include orphaned documents
            # of a chunk migration, so a sharded collection is counted for real.
            coll = self.db[name]
            stored = coll.count_documents({}) if self.sharded else \
                coll.estimated_document_count()
            wrote = n if inserted is None else inserted.get(name)
            if stored != n or wrote != n:
                raise self.error(f"{self.kind} {version!r}: {name} holds {stored} documents "
                                 f"(inserted {wrote}), expected {n}")
            keys = [dict(ix["key"]) for ix in self.db[name].list_indexes()]
            if {"_id": 1} not in keys:
                raise self.error(f"{self.kind} {version!r}: {name} has no _id index ({keys})")

    def mark_ready(self, version: str, fields: dict[str, Any] | None = None) -> None:
        """``building`` -> ``ready`` (plus `fields`), once everything is written and verified.

        Raises:
            error: the version is no longer ``building`` (another writer or a cleanup).
        """
        result = self.registry.update_one(
            {"_id": version, "status": STATUS_BUILDING},
            {"$set": {"status": STATUS_READY, "ready_at": datetime.now(UTC), **(fields or {})}},
        )
        if result.matched_count != 1:
            raise self.error(f"{self.kind} {version!r} changed state while being written")

    # ---------------------------------------------------------------- switch

    def switch(self, version: str) -> str | None:
        """Point readers at `version` (one atomic write of the pointer).

        Returns:
            The version active before the call (`version` itself when it already was, and then
            nothing is written; None on the first switch).

        Raises:
            error: `version` is unknown or not ready; the pointer is left alone.
        """
        doc = self.registry.find_one({"_id": version}, {"status": 1})
        if doc is None:
            raise self.error(f"cannot switch to unknown {self.kind} {version!r}")
        if doc["status"] != STATUS_READY:
            raise self.error(f"cannot switch to {self.kind} {version!r}: status is "
                             f"{doc['status']!r}, not 'ready'")
        current = self.active()
        if current == version:
            return current
        before = self.pointer.find_one_and_update(
            {"_id": self.pointer_id},
            {"$set": {self.pointer_field: version, "previous": current,
                      "switched_at": datetime.now(UTC)}},
            upsert=True,
            return_document=ReturnDocument.BEFORE,
        )
        previous = before.get(self.pointer_field) if before else None
        # A concurrent drop may have taken the version out of 'ready' between our check and
        # the write: put the pointer back rather than serve a gap.
        if not self.is_ready(version):
            self.revert_switch(version, previous)
            raise self.error(f"{self.kind} {version!r} changed state while being switched to")
        logger.info("switched %s to %s (previous: %s)", self.kind, version, previous)
        return previous

    def revert_switch(self, version: str, previous: str | None) -> None:
        """Undo `switch(version)` that returned `previous`: point back at it (or remove the
        pointer when there was none). Does nothing when the pointer has moved on since."""
        if previous:
            self.pointer.update_one(
                {"_id": self.pointer_id, self.pointer_field: version},
                {"$set": {self.pointer_field: previous, "previous": None,
                          "switched_at": datetime.now(UTC)}})
        else:
            self.pointer.delete_one({"_id": self.pointer_id, self.pointer_field: version})

    # ---------------------------------------------------------------- drop

    def drop(self, version: str) -> None:
        """Drop one version that is not active: status ``dropping``, collections, document.

        Raises:
            error: the version is active.
        """
        if self.active() == version:
            raise self.error(f"refusing to drop the active {self.kind} {version!r}")
        self.registry.update_one({"_id": version}, {"$set": {"status": STATUS_DROPPING}})
        if self.active() == version:  # switched to meanwhile: put it back
            self.registry.update_one({"_id": version}, {"$set": {"status": STATUS_READY}})
            raise self.error(f"refusing to drop the active {self.kind} {version!r}")
        self._drop_collections(version)
        self.registry.delete_one({"_id": version})
        logger.info("dropped %s %s", self.kind, version)

    def prune(self, keep: int, protect: Iterable[str] = ()) -> list[str]:
        """Drop the oldest ready versions beyond the newest `keep`.

        The active version and the `protect`ed ones are never dropped (kept in addition to the
        newest `keep`).

        Returns:
            The dropped versions, newest first.
        """
        if keep < 1:
            raise ValueError("keep must be >= 1")
        spared = set(protect) | {self.active()}
        ready = [d["_id"] for d in
                 self.registry.find({"status": STATUS_READY}, {"_id": 1}).sort(_NEWEST_FIRST)]
        dropped = []
        for version in ready[keep:]:
            if version in spared:
                continue
            self.drop(version)
            dropped.append(version)
        return dropped

    def cleanup_incomplete(self, *, now: datetime | None = None) -> list[str]:
        """Abandon every version that is not ``ready`` (a crashed write or drop); never the
        active one.

        A crashed version becomes ``abandoned`` (with ``abandoned_at``) before its collections
        are dropped, so a late writer's status check fails from then on. Abandoned versions'
        collections are dropped again by every cleanup (one batch of a late writer may have
        recreated one), and their documents are deleted once older than `ABANDONED_KEEP`.
        Only run it while no write is in progress (the publish lock serialises writers).

        Args:
            now: the clock for `ABANDONED_KEEP` (default: now, UTC).

        Returns:
            The versions abandoned by this call.
        """
        now = now if now is not None else datetime.now(UTC)
        active = self.active()
        abandoned = []
        for doc in self.registry.find({"status": {"$ne": STATUS_READY}},
                                      {"_id": 1, "status": 1, "abandoned_at": 1}):
            version = doc["_id"]
            if version == active:  # cannot happen through this class; never drop what serves
                logger.warning("active %s %s is not ready; leaving it", self.kind, version)
                continue
            if doc.get("status") != STATUS_ABANDONED:
                marked = self.registry.update_one(
                    {"_id": version, "status": doc.get("status")},
                    {"$set": {"status": STATUS_ABANDONED, "abandoned_at": now}})
                if not marked.modified_count:  # its writer changed it meanwhile (made it ready)
                    continue
                self._drop_collections(version)
                abandoned.append(version)
                logger.info("abandoned incomplete %s %s (was %s)", self.kind, version,
                            doc.get("status"))
                continue
            self._drop_collections(version)
            since = doc.get("abandoned_at")
            if since is None or now - since >= ABANDONED_KEEP:
                self.registry.delete_one({"_id": version, "status": STATUS_ABANDONED})
                logger.info("forgot abandoned %s %s", self.kind, version)
        return abandoned

    def _drop_collections(self, version: str) -> None:
        for name in self.collections(version):
            self.db.drop_collection(name)


def create_version_collections(db: Database, names: list[str], *, sharded: bool) -> None:
    """Drop `names` (leftovers of a failed attempt) and create them empty; `sharded`: shard
    them on hashed ``_id`` (against a mongos only)."""
    for name in names:
        db.drop_collection(name)
        # created explicitly, so an empty version still has every collection
        db.create_collection(name)
    if sharded:
        shard_collections(db, names)
