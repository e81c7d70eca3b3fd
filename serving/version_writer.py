"""Writing one model version from the model registry into the serving store, per user partition.

`write_version` is step 2 of `serving.publish.publish_model` (which holds the publish lock):

1. read the item side once (item ids and factors, similar items, the popular list, the
   snapshot's item attributes) and check it before anything is written;
2. begin the version (`model_versions` document ``building``, fresh collections, sharded on
   hashed ``_id`` behind a mongos) and write the similar, popular and item-embedding
   collections;
3. write the users partition by partition through the mapper (`recsys.partitions`): each part
   (`write_user_part`, a module-level function of plain values) opens its own client, reads
   its partition of the scores, builds and inserts its recommendation and embedding documents
   unordered, and checks a sample of its users as stored; the parts run in any order, in
   parallel, into the same collections;
4. verify: the parts cover every user exactly once, every collection holds exactly the
   documents expected (the ``_id`` index makes a duplicate impossible, so a right count
   means no gap either), then mark the version ready. Switching stays with `publish_model`.

Steps 2-4 are one sequence (`_write_and_mark_ready`), the only code that writes a version into
the serving collections; `write_payload_version` drives it for a whole in-memory
`PublishPayload` (tests, benchmarks), its users as one part written in the caller's process.

Idempotent parts: a document's ``_id`` is its user id and its content a pure function of the
model's files and the version's ``generated_at`` (fixed by the coordinator and passed to every
part), so a part that Dask runs again after its worker died inserts with ``ordered=False`` and
skips the duplicate-key errors of what its first attempt wrote (`insert_documents`,
``existing_ok``). This was chosen over "delete the part's users, then insert": it costs nothing
on the first (normal) attempt, needs no extra field or index to find a part's documents, and
stays correct when a first attempt that was presumed dead is still writing (both attempts write
identical documents; with delete-then-insert one could delete the other's writes).

One attempt at a time: `_write_and_mark_ready` gives every publish attempt a token, kept in the
version's registry document, and a part checks before each batch that the version is still
``building`` under its attempt. A part of a failed attempt that is still running when the
publish is retried (which begins the version afresh, with a new token) therefore stops at its
next check. The batch it checked just before the retry began may still land (at most one per
late part); a retry keeps the unfinished attempt's ``generated_at``, so such a batch holds
exactly the documents the retry would write, and the retry's parts skip them as their own.
When a publish of another version cleans the failed attempt up first, the version becomes
``abandoned`` (`recsys.versions`): its parts stop at their next check, a collection their last
batch recreates is dropped again by the next cleanup, and a retry still keeps its
``generated_at``.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
from pymongo.database import Database

from recsys.errors import PublishError
from recsys.mongo import client_for, recs_collection, serving_collection
from recsys.partitions import Mapper, serial_map
from recsys.progress import ProgressCallback, report_progress
from recsys.settings import Settings
from recsys.versions import STATUS_ABANDONED, STATUS_BUILDING
from serving.artifacts import load_item_side, load_user_part, version_dir
from serving.documents import (
    ITEM_KINDS,
    USER_KINDS,
    ItemDocuments,
    UserDocuments,
    attribute_columns,
    attribute_values,
    build_documents,
    build_item_documents,
    build_user_documents,
    version_fields,
)
from serving.payload import PublishPayload
from serving.store import MongoServingStore, insert_documents, verify_user_sample

logger = logging.getLogger(__name__)

PROGRESS_POLL_S = 1.0


def _attempt_check(store: MongoServingStore, version: str, attempt: str, part: int
                   ) -> Callable[[], None]:
    """A check that raises once `version` is no longer ``building`` under `attempt`.

    A late part of a failed attempt must not mix its documents into the version that a later
    attempt is writing, nor keep refilling collections a cleanup dropped (the one batch it may
    have in flight is dropped by the next cleanup: `recsys.versions.ABANDONED_KEEP`).
    """
    def check() -> None:
        current = store.get_version(version) or {}
        status = current.get("status")
        if status != STATUS_BUILDING or current.get("attempt") != attempt:
            raise PublishError(
                f"version {version!r} is {status or 'gone'}"
                + (" under another publish attempt" if status == STATUS_BUILDING else "")
                + f", not being written by this one: part {part} stops")

    return check


def _write_users(db: Database, users: UserDocuments, *, part: int, attempt: str,
                 batch_size: int, progress: ProgressCallback | None = None) -> dict[str, Any]:
    """Insert the recommendation and user-embedding documents of one part (idempotently, only
    while `attempt` is the one writing the version) and check a sample of them as stored.

    Returns:
        The part's result, as `write_user_part` describes it.
    """
    version = users.version
    check_attempt = _attempt_check(MongoServingStore(db), version, attempt, part)
    check_attempt()
    inserted, written = {}, {}
    for kind in USER_KINDS:
        new, old = insert_documents(db[serving_collection(kind, version)],
                                    users.documents(kind), batch_size, existing_ok=True,
                                    before_batch=check_attempt, progress=progress,
                                    step=f"publish {kind}", total=len(users.user_ids))
        inserted[kind], written[kind] = new, new + old
    verify_user_sample(db, users)
    item_counts, lists = users.list_counts()
    return {"part": part, "users": len(users.user_ids), "written": written,
            "inserted": inserted, "item_counts": item_counts, "lists": lists,
            "explanations": users.explanations}


def write_user_part(mongodb_uri: str, db_name: str, timeout_ms: int, version: str,
                    model_dir: str, features_dir: str, part: int, partitions: int,
                    batch_size: int, generated_at: datetime, attempt: str) -> dict[str, Any]:
    """Write the recommendation and user-embedding documents of one user partition.

    A part of `write_version`, run through its mapper (possibly on another machine): plain
    arguments, its own MongoDB client, idempotent (documents already stored by an earlier
    attempt are skipped, see the module docstring).

    Args:
        mongodb_uri, db_name, timeout_ms: where to write (`Settings.mongodb_*`).
        version: the model version being written (``building``).
        model_dir: its registry directory.
        features_dir: the feature snapshots (item attributes).
        part, partitions: which partition of how many.
        batch_size: documents per `insert_many`.
        generated_at: the version's ``generated_at`` (the same for every part and retry).
        attempt: the publish attempt's token, in the version's registry document: the part
            writes only while the version is ``building`` under this attempt.

    Returns:
        ``{part, users, written: {kind: n}, inserted: {kind: n}, item_counts, lists,
        explanations}``: ``written`` counts the documents stored for this part (inserted now
        or found from an earlier attempt), ``item_counts``/``lists`` are its
        `serving.rec_stats.list_counts`.

    Raises:
        ModelError / PublishError: the part's files are damaged, its arrays malformed, the
            version is not being written (any more), or the sample check failed.
    """
    started = time.perf_counter()
    data = load_user_part(Path(model_dir), Path(features_dir), part, partitions)
    item_ids = np.asarray([str(x) for x in data.item_ids.tolist()], dtype=object)
    attributes = attribute_columns(attribute_values(data.attributes, len(item_ids)))
    users = build_user_documents(
        version, generated_at, user_ids=data.user_ids, item_ids=item_ids,
        rec_items=data.rec_items, rec_scores=data.rec_scores, user_factors=data.user_factors,
        attributes=attributes, explain_items=data.rec_explain_items,
        explain_scores=data.rec_explain_scores)
    client = client_for(mongodb_uri, timeout_ms=timeout_ms)
    try:
        result = _write_users(client.get_database(db_name), users, part=part, attempt=attempt,
                              batch_size=batch_size)
    finally:
        client.close()
    skipped = result["written"]["recs"] - result["inserted"]["recs"]
    logger.info("version %s part %d/%d: %d users in %.1fs%s", version, part, partitions,
                result["users"], time.perf_counter() - started,
                f" ({skipped} already stored by an earlier attempt)" if skipped else "")
    return result


@contextmanager
def _report_user_progress(db: Database, version: str, total: int,
                          progress: ProgressCallback | None) -> Iterator[None]:
    """While the parts run (anywhere), tell `progress` how many users are stored, each second.

    The parts cannot call a callback of this process; the collection's metadata count can be
    read from here at no cost to the writers.
    """
    if progress is None:
        yield
        return
    stop = threading.Event()
    collection = db[recs_collection(version)]

    def poll() -> None:
        last = -1
        while not stop.wait(PROGRESS_POLL_S):
            try:
                done = collection.estimated_document_count()
            except Exception:  # progress is best effort; the writers report real errors
                logger.debug("progress poll failed", exc_info=True)
                continue
            if done != last and done < total:
                report_progress(progress, "publish recs", done, total)
                last = done

    poller = threading.Thread(target=poll, name="publish-progress", daemon=True)
    poller.start()
    try:
        yield
    finally:
        stop.set()
        poller.join()


def _generated_at(registered: dict[str, Any] | None) -> datetime:
    """The version's ``generated_at``: kept from an unfinished earlier attempt, still
    ``building`` or already ``abandoned`` by a cleanup (so a late part of that attempt can only
    write documents identical to this attempt's), else now. BSON keeps milliseconds, so a new
    value is cut to them as well."""
    if (registered and registered.get("status") in (STATUS_BUILDING, STATUS_ABANDONED)
            and registered.get("generated_at")):
        return registered["generated_at"].astimezone(UTC)
    now = datetime.now(UTC)
    return now.replace(microsecond=now.microsecond // 1000 * 1000)


def _write_and_mark_ready(db: Database, items: ItemDocuments, *, metadata: dict[str, Any],
                          n_users: int, partitions: int,
                          write_users: Callable[[str], list[dict[str, Any]]], batch_size: int,
                          progress: ProgressCallback | None, started: float
                          ) -> tuple[dict[str, int], float, bool]:
    """The one sequence that writes a version: begin it, write the item side, have
    `write_users(attempt)` write the user parts, check they cover every user once, verify the
    counts and mark the version ready.

    Returns:
        (the version's counts, the seconds its publish took, whether a copy was replaced).
    """
    store = MongoServingStore(db)
    version = items.version
    attempt = uuid.uuid4().hex  # the parts write only while this attempt is the current one
    replaced = store.begin_version(version, {
        "generated_at": items.generated_at, "attempt": attempt, "publish_seconds": None,
        "metadata": metadata,
        "counts": {"users": n_users, "items": len(items.item_ids), "recs": n_users,
                   "similar": len(items.item_ids), "popular": items.popular_len,
                   "factors": items.factors}})
    written: dict[str, int] = {}
    for kind in ITEM_KINDS:
        written[kind] = insert_documents(
            store.db[serving_collection(kind, version)], items.documents(kind), batch_size,
            progress=progress, step=f"publish {kind}", total=items.expected[kind])[0]
    parts = write_users(attempt)
    users = sum(p["users"] for p in parts)
    done = sorted(p["part"] for p in parts)
    if done != list(range(partitions)) or users != n_users:
        raise PublishError(f"version {version!r}: the parts wrote partitions {done} holding "
                           f"{users} users; expected partitions 0..{partitions - 1} "
                           f"holding the model's {n_users}")
    for kind in USER_KINDS:
        written[kind] = sum(p["written"][kind] for p in parts)
        report_progress(progress, f"publish {kind}", written[kind], n_users)
    expected = {**items.expected, "recs": n_users, "user_embeddings": n_users}
    fields = version_fields(
        items, n_users=n_users,
        list_counts=(sum((p["item_counts"] for p in parts), np.zeros(len(items.item_ids),
                                                                     dtype=np.int64)),
                     sum(p["lists"] for p in parts)),
        explanations=any(p["explanations"] for p in parts))
    store.verify_counts(version, expected, written)
    seconds = store.mark_ready(version, started=started, fields=fields)
    logger.info("published version %s in %d partition(s): %s in %.2fs", version, partitions,
                fields["counts"], seconds)
    return fields["counts"], seconds, replaced


def write_version(db: Database, settings: Settings, version: str, *,
                  mapper: Mapper = serial_map,
                  progress: ProgressCallback | None = None,
                  unfinished: dict[str, Any] | None = None) -> dict[str, int]:
    """Write model `version` from `settings.models_dir` into the serving store, ready to switch.

    See the module docstring. Rewrites a version that is in MongoDB but not ready; refuses
    the active one.

    Args:
        db: the serving database (the caller holds the publish lock).
        settings: `models_dir`, `features_dir`, `publish_batch_size` and the MongoDB settings
            the parts connect with.
        version: the model version.
        mapper: runs the user partitions (`recsys.partitions.serial_map`: one after another,
            here).
        progress: told the documents written: per batch for the item collections, each
            second for the users (steps ``publish <kind>``).
        unfinished: the version's registry document left by an earlier, failed attempt
            (``building``, or ``abandoned`` by `MongoServingStore.cleanup_incomplete`), if
            any: its ``generated_at`` is kept (see the module docstring).

    Returns:
        The version's counts ``{users, items, recs, similar, popular, factors}``.

    Raises:
        NotFound: the models directory has no such version.
        ModelError: its artifacts are incomplete, damaged or were never scored.
        PublishError: bad arrays, the version is active, or verification failed (the version
            then stays ``building`` for `MongoServingStore.cleanup_incomplete`).
    """
    started = time.perf_counter()
    model_dir = version_dir(settings.models_dir, version)
    side = load_item_side(model_dir, settings.features_dir)
    generated_at = _generated_at(unfinished)
    items = build_item_documents(
        version, generated_at, item_ids=side.item_ids, similar_items=side.similar_items,
        similar_scores=side.similar_scores, popular_items=side.popular_items,
        popular_scores=side.popular_scores, item_factors=side.item_factors,
        attributes=side.attributes)
    batch_size = settings.publish_batch_size

    def write_users(attempt: str) -> list[dict[str, Any]]:
        args = [(settings.mongodb_uri, settings.mongodb_db, settings.mongodb_timeout_ms,
                 version, str(model_dir), str(settings.features_dir), part, side.partitions,
                 batch_size, generated_at, attempt) for part in range(side.partitions)]
        with _report_user_progress(db, version, side.user_count, progress):
            return mapper("publish users", write_user_part, args)

    counts, _, _ = _write_and_mark_ready(
        db, items, metadata=side.metadata, n_users=side.user_count, partitions=side.partitions,
        write_users=write_users, batch_size=batch_size, progress=progress, started=started)
    return counts


def write_payload_version(db: Database, payload: PublishPayload, *, batch_size: int = 5000,
                          progress: ProgressCallback | None = None) -> dict[str, Any]:
    """Write a whole in-memory `payload` as one version, ready to switch (not switched).

    The same sequence as `write_version` (`_write_and_mark_ready`), with all users as one part
    written in this process; for tests and benchmarks that build payloads from arrays. Every
    array is checked before the database is touched. Rerunning with the same version drops
    whatever that version has (an incomplete or a ready-but-inactive copy) and rewrites it; the
    active version is never overwritten. Only `serving.publish.publish_model` switches what is served.

    Args:
        db: the serving database.
        payload: the version's arrays (`serving.payload.PublishPayload`).
        batch_size: documents per `insert_many`.
        progress: told the documents written after each batch (steps ``publish <kind>``).

    Returns:
        ``{version, counts, seconds, replaced}``.

    Raises:
        ValueError: `batch_size` is below 1.
        InvalidId: the version breaks the id rule.
        PublishError: bad payload, the version is active, or verification failed (the
            version then stays ``building`` for `MongoServingStore.cleanup_incomplete`).
    """
    if batch_size < 1:
        raise ValueError("batch_size must be >= 1")
    started = time.perf_counter()
    docs = build_documents(payload)  # validates everything before touching the database

    def write_users(attempt: str) -> list[dict[str, Any]]:
        return [_write_users(db, docs.users, part=0, attempt=attempt, batch_size=batch_size,
                             progress=progress)]

    counts, seconds, replaced = _write_and_mark_ready(
        db, docs.items, metadata=payload.metadata, n_users=len(docs.users.user_ids),
        partitions=1, write_users=write_users, batch_size=batch_size, progress=progress,
        started=started)
    return {"version": docs.version, "counts": counts, "seconds": seconds,
            "replaced": replaced}
