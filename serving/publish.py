"""The one path that changes what is served: `publish_model` (and `rollback_model` on top of it).

The pipeline flow (after the gate), `recsys models promote`, `recsys models rollback` and the
admin route `POST /admin/active-version` all call `publish_model`. Holding the publish lock
(`serving/lock.py`), it

1. cleans up what a crashed publish or materialization left (nothing else writes meanwhile);
2. writes the model version into MongoDB from the model registry's artifacts, unless it is
   already there and ready (so promoting or rolling back a kept version writes nothing): the
   item collections once, the users per partition of the version's scores through the
   `mapper` (parallel, unordered writers into the same new collections), then verified and
   marked ready once (`serving/version_writer.py`);
3. makes sure the model's feature snapshot (its metadata's ``feature_snapshot``) is materialized
   in the online feature store, writing it from the snapshot on disk when it is not;
4. switches the online-feature pointer, then the model pointer (the API follows the latter, so
   it is the commit point; when it fails, the online pointer is put back);
5. prunes old model versions (`keep_versions`, never the active one) and old online snapshots
   (`feature_online_keep`, never one a kept model version was trained on).

A caller that decided on a version against a champion (the pipeline's gate) passes it as
``expected_active``: when another publish, promote or rollback changed the active version while
this one waited for the lock, nothing is switched and the result says ``superseded``. The admin
route passes ``write_missing=False``: the API switches between versions MongoDB already holds and
never writes one (that is `recsys models promote`, which has the models directory).

Online features rule: when the model's snapshot is neither online nor on disk (or lacks the
user/item feature views), the model is still switched, the online features stay as they were,
a warning is logged and the result says ``online_switched: False``. A snapshot that exists but
fails to write stops the publish before anything is switched.
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass, field
from typing import Any

from pymongo.database import Database

from features.online import (
    ENTITY_VIEWS,
    cleanup_online,
    is_materialized,
    prune_online,
    revert_online,
    switch_online,
    write_snapshot,
)
from features.snapshot import load_manifest
from recsys.errors import FeatureStoreError, NotFound, PublishError
from recsys.ids import check_id
from recsys.mongo import open_database
from recsys.partitions import Mapper, serial_map
from recsys.progress import ProgressCallback
from recsys.settings import Settings
from serving.lock import PublishLock, publish_lock
from serving.store import MongoServingStore, referenced_snapshots
from serving.version_writer import write_version

logger = logging.getLogger(__name__)

ALREADY_ACTIVE = "already the active version"


class _Unset:
    """Marks `expected_active` as not given (None is a real value: nothing served yet)."""


UNSET = _Unset()


@dataclass(frozen=True)
class PublishResult:
    """What `publish_model` did.

    Attributes:
        version: the model version now served.
        previous_version: the version served before (for an already active version: the one a
            rollback would restore).
        skipped: "already the active version" when the model pointer did not change, else None.
        written: the version was written into MongoDB now (from the model registry).
        counts: document counts of the written version ({} when nothing was written).
        feature_snapshot: the model's feature snapshot (None when its metadata names none).
        online_switched: the online features now serve `feature_snapshot`.
        online_written: the snapshot was materialized now.
        online_previous: the snapshot online before.
        dropped_versions: model versions pruned.
        dropped_snapshots: online snapshots pruned.
        superseded: why nothing was switched although the call succeeded (the active version
            was no longer the expected one), else None.
    """

    version: str
    previous_version: str | None
    skipped: str | None = None
    written: bool = False
    counts: dict[str, int] = field(default_factory=dict)
    feature_snapshot: str | None = None
    online_switched: bool = False
    online_written: bool = False
    online_previous: str | None = None
    dropped_versions: list[str] = field(default_factory=list)
    dropped_snapshots: list[str] = field(default_factory=list)
    superseded: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """JSON-friendly form, with ``active_version`` (for artifacts and CLI output)."""
        return {"active_version": self.version, **asdict(self)}


def _ensure_online(db: Database, settings: Settings, version: str, snapshot: str | None,
                   progress: ProgressCallback | None = None) -> tuple[bool, bool]:
    """Make `snapshot` materialized online when possible: (available, written now)."""
    if not snapshot:
        logger.warning("model version %s names no feature snapshot: online features are not "
                       "switched", version)
        return False, False
    if is_materialized(db, snapshot):
        return True, False
    try:
        manifest = load_manifest(settings.features_dir, snapshot)
    except FeatureStoreError as exc:
        logger.warning("feature snapshot %s of model version %s is neither online nor on disk "
                       "(%s): online features are not switched", snapshot, version, exc)
        return False, False
    lacking = [view for view, _ in ENTITY_VIEWS.values() if view not in manifest.views]
    if lacking:
        logger.warning("feature snapshot %s of model version %s has no %s view: online "
                       "features are not switched", snapshot, version, " or ".join(lacking))
        return False, False
    write_snapshot(db, manifest, batch_size=settings.publish_batch_size, progress=progress)
    return True, True


def publish_model(settings: Settings, version: str, *, holder: str | None = None,
                  lock_timeout_s: float | None = None,
                  expected_active: str | None | _Unset = UNSET,
                  write_missing: bool = True,
                  progress: ProgressCallback | None = None,
                  mapper: Mapper = serial_map) -> PublishResult:
    """Serve model `version`: the only function that changes what is served.

    See the module docstring for the steps. Publishing the active version again writes nothing
    and reports ``skipped``; it still re-points the online features at the model's snapshot.

    Args:
        settings: MongoDB, `models_dir`, `features_dir`, `publish_batch_size`, `keep_versions`,
            `feature_online_keep` and the publish-lock settings.
        version: the model version to serve.
        holder: who publishes, shown to callers waiting for the lock (default "publish <v>").
        lock_timeout_s: how long to wait for the lock (default
            `settings.publish_lock_timeout_s`).
        expected_active: the version the caller decided against (None: nothing served); when
            the active version differs once the lock is held, nothing changes (``superseded``).
        write_missing: write the version from the models directory when MongoDB lacks it;
            False raises NotFound instead.
        progress: told the documents written (the serving collections, then the online
            features), when anything is written.
        mapper: runs the per-partition user writers (`recsys.partitions`; the flows pass the
            Dask one); the version is switched once, after every part is written and verified.

    Returns:
        A `PublishResult`.

    Raises:
        InvalidId: `version` breaks the id rule.
        NotFound: the version is neither ready in MongoDB nor in the models directory.
        ModelError: its artifacts are incomplete, damaged or were never scored.
        PublishLockTimeout: another publish held the lock longer than the timeout.
        PublishError / FeatureStoreError: writing or switching failed; what was served before
            is still served.
    """
    check_id(version, kind="model version")
    with open_database(settings) as db, publish_lock(
            db, settings, holder=holder or f"publish {version}", timeout_s=lock_timeout_s) as lock:
        return _serve(db, lock, settings, version, expected_active=expected_active,
                      write_missing=write_missing, progress=progress, mapper=mapper)


def rollback_model(settings: Settings, *, holder: str | None = None,
                   lock_timeout_s: float | None = None) -> PublishResult:
    """Serve the previously active model version again, through the same steps and lock as
    `publish_model`. The previous version is read once the lock is held, so a rollback queued
    behind another publish undoes that publish, not an older one.

    Raises:
        PublishError: there is no previous version.
        (and whatever `publish_model` raises)
    """
    with open_database(settings) as db, publish_lock(
            db, settings, holder=holder or "rollback", timeout_s=lock_timeout_s) as lock:
        previous = MongoServingStore(db).previous_version()
        if not previous:
            raise PublishError("no previous version to roll back to")
        return _serve(db, lock, settings, previous)


def _serve(db: Database, lock: PublishLock, settings: Settings, version: str, *,
           expected_active: str | None | _Unset = UNSET, write_missing: bool = True,
           progress: ProgressCallback | None = None,
           mapper: Mapper = serial_map) -> PublishResult:
    """The steps of the module docstring; the caller holds the publish lock."""
    store = MongoServingStore(db)
    store.cleanup_incomplete()
    unfinished = store.get_version(version)  # an earlier attempt's: building or abandoned
    cleanup_online(db)
    active = store.active_version()
    if not isinstance(expected_active, _Unset) and active != expected_active:
        why = (f"the active version changed from {expected_active} to {active} while this "
               f"publish waited; {version} was decided against {expected_active} and is not "
               "served")
        logger.warning("%s", why)
        return PublishResult(version=str(active), previous_version=store.previous_version(),
                             skipped=why, superseded=why)
    counts: dict[str, int] = {}
    if not store.is_ready(version):
        if not write_missing:
            raise NotFound(f"model version {version!r} is not published in MongoDB; publish it "
                           f"with `recsys models promote {version}`")
        counts = write_version(db, settings, version, mapper=mapper, progress=progress,
                               unfinished=unfinished)
    doc = store.get_version(version) or {}
    snapshot = (doc.get("metadata") or {}).get("feature_snapshot")
    snapshot = str(snapshot) if snapshot else None
    online_ready, online_written = _ensure_online(db, settings, version, snapshot, progress)

    lock.ensure_held()  # the lease must still be ours before anything switches
    online_previous = switch_online(db, snapshot) if online_ready and snapshot else None
    try:
        previous = store.activate(version)
    except BaseException:
        if online_ready and snapshot and online_previous != snapshot:
            revert_online(db, snapshot, online_previous)
        raise
    skipped = ALREADY_ACTIVE if previous == version else None
    if skipped:
        previous = store.previous_version()

    # the version just replaced stays: API workers may still follow the old pointer, and it is
    # what a rollback serves
    dropped_versions = store.prune(settings.keep_versions, protect={previous} - {None})
    dropped_snapshots = prune_online(db, keep=settings.feature_online_keep,
                                     protect=referenced_snapshots(db))
    result = PublishResult(
        version=version, previous_version=previous, skipped=skipped, written=bool(counts),
        counts=counts, feature_snapshot=snapshot, online_switched=online_ready,
        online_written=online_written, online_previous=online_previous,
        dropped_versions=dropped_versions, dropped_snapshots=dropped_snapshots)
    logger.info("serving model version %s (previous %s%s); online features %s", version,
                previous, f", {skipped}" if skipped else "",
                f"on snapshot {snapshot}" if online_ready else "not switched")
    return result
