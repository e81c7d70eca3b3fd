"""Retention of offline feature snapshots: keep the newest K, never one a model references.

A snapshot is referenced when a published model version in MongoDB (`model_versions` documents'
`metadata.feature_snapshot`), a model in the local registry (`<data_dir>/models/<version>/
metadata.json`, key `feature_snapshot`) or the online feature store (`feature_snapshots`) names
it. If MongoDB cannot be read, nothing is deleted: a snapshot must never vanish under a model
only because the check could not run.
"""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

from features.online import REGISTRY_COLLECTION
from features.snapshot import list_manifests, manifest_path
from recsys.errors import FeatureStoreError
from recsys.settings import Settings

log = logging.getLogger(__name__)


def local_model_references(models_root: Path) -> set[str]:
    """Snapshot ids named by `<models_root>/<version>/metadata.json` (`feature_snapshot`)."""
    refs: set[str] = set()
    for meta in Path(models_root).glob("*/metadata.json"):
        try:
            snapshot = json.loads(meta.read_text()).get("feature_snapshot")
        except (OSError, json.JSONDecodeError) as error:
            raise FeatureStoreError(f"{meta}: unreadable model metadata ({error}); refusing to "
                                    "prune feature snapshots") from error
        if snapshot:
            refs.add(str(snapshot))
    return refs


def mongo_references(settings: Settings) -> set[str]:
    """Snapshot ids named by published model versions and online feature materializations."""
    from pymongo.errors import PyMongoError

    from serving.store import mongo_client

    client = mongo_client(settings)
    try:
        db = client[settings.mongodb_db]
        refs = {str(doc["metadata"]["feature_snapshot"]) for doc in db["model_versions"].find(
            {"metadata.feature_snapshot": {"$exists": True}},
            {"metadata.feature_snapshot": 1})}
        refs |= {str(doc["_id"]) for doc in db[REGISTRY_COLLECTION].find({}, {"_id": 1})}
        return refs
    except PyMongoError as error:
        raise FeatureStoreError(f"cannot read model references from MongoDB "
                                f"{settings.mongodb_db} ({error}); no snapshot was deleted"
                                ) from error
    finally:
        client.close()


def referenced_snapshots(settings: Settings, *, check_mongo: bool = True) -> set[str]:
    """Every snapshot id some model (local or published) or the online store references."""
    refs = local_model_references(settings.models_dir)
    if check_mongo:
        refs |= mongo_references(settings)
    return refs


def prune_snapshots(settings: Settings, *, keep: int | None = None, check_mongo: bool = True,
                    dry_run: bool = False) -> list[str]:
    """Delete feature snapshots beyond the newest `keep`, sparing every referenced one.

    Args:
        settings: `features_dir`, `models_dir`, MongoDB connection.
        keep: snapshots to keep by build time (default `settings.feature_keep_snapshots`).
        check_mongo: also read references from MongoDB (turn off only without a server).
        dry_run: report what would be deleted without deleting.

    Returns:
        The deleted (or, with `dry_run`, deletable) snapshot ids, oldest first.

    Raises:
        FeatureStoreError: references could not be read (nothing is deleted then).
    """
    keep = settings.feature_keep_snapshots if keep is None else keep
    if keep < 1:
        raise ValueError(f"keep must be >= 1, got {keep}")
    manifests = list_manifests(settings.features_dir)  # oldest first
    protected = referenced_snapshots(settings, check_mongo=check_mongo)
    newest = {m.snapshot_id for m in manifests[-keep:]}
    doomed = [m for m in manifests if m.snapshot_id not in newest | protected]
    if dry_run:
        return [m.snapshot_id for m in doomed]
    for manifest in doomed:
        # manifest first: without it the snapshot no longer exists for any reader
        manifest_path(settings.features_dir, manifest.snapshot_id).unlink()
        for view in manifest.views.values():
            shutil.rmtree(Path(view.path).parent, ignore_errors=True)
        log.info("feature snapshot %s deleted (retention keep=%d)", manifest.snapshot_id, keep)
    return [m.snapshot_id for m in doomed]
