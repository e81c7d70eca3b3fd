"""Retention over the whole data dir, composed from the owners' own rules (no Prefect here).

Model versions are pruned by `training.registry` (never one MongoDB lists or may roll back to);
feature snapshots by `features.retention`, protected by whatever the registry, the serving store
and the online feature store reference; backups by `serving.backup`; old logs and Prefect results
by age. The maintenance flow and `recsys ops prune` both call `prune_all`.
"""

from __future__ import annotations

import time
from pathlib import Path

from pymongo.errors import PyMongoError

from features.online import materialized_snapshots
from features.retention import prune_snapshots
from recsys.errors import FeatureStoreError
from recsys.mongo import open_database
from recsys.settings import Settings
from serving.backup import default_backup_root, prune_backups
from serving.store import open_store
from serving.store import referenced_snapshots as served_snapshots
from training.registry import prune_models
from training.registry import referenced_snapshots as saved_model_snapshots


def served_versions(settings: Settings) -> set[str]:
    """Versions MongoDB knows (any status) plus the active and previous pointer.

    A model directory is never pruned while one of these can be served or rolled back to.
    """
    with open_store(settings) as store:
        versions = {str(doc["_id"]) for doc in store.list_versions()}
        state = store.active_state() or {}
    versions.update(str(v) for v in (state.get("version"), state.get("previous")) if v)
    return versions


def protected_snapshots(settings: Settings) -> set[str]:
    """Feature snapshots retention must keep: those of every saved model (`models/`), of every
    version the serving store lists and of every online materialization.

    Raises:
        FeatureStoreError: MongoDB could not be read (nothing may be deleted then).
        ModelError: a saved model's metadata is unreadable.
    """
    refs = saved_model_snapshots(settings.models_dir)
    try:
        with open_database(settings) as db:
            refs |= served_snapshots(db) | materialized_snapshots(db)
    except PyMongoError as error:
        raise FeatureStoreError(f"cannot read model references from MongoDB "
                                f"{settings.mongodb_db} ({error}); no snapshot was deleted"
                                ) from error
    return refs


def prune_old_files(root: Path, *, days: float, pattern: str = "*") -> list[str]:
    """Delete files under `root` matching `pattern` last modified more than `days` ago."""
    root = Path(root)
    if not root.is_dir():
        return []
    cutoff = time.time() - days * 86400
    removed = []
    for path in root.rglob(pattern):
        if path.is_file() and path.stat().st_mtime < cutoff:
            path.unlink(missing_ok=True)
            removed.append(str(path.relative_to(root)))
    return removed


def prune_all(settings: Settings, *, keep_snapshots: int | None = None,
              keep_models: int | None = None, keep_backups: int = 7,
              log_days: float = 14) -> dict[str, list[str]]:
    """Every retention rule over the data dir; what each removed, by kind.

    Args:
        settings: paths, MongoDB, and the defaults `feature_keep_snapshots` / `keep_models`.
        keep_snapshots / keep_models: override the settings' counts (None: the setting).
        keep_backups: complete backups kept.
        log_days: age in days after which logs and Prefect results are deleted.
    """
    data_dir = Path(settings.data_dir)
    models = prune_models(settings.models_dir,
                          keep=settings.keep_models if keep_models is None else keep_models,
                          protect=served_versions(settings))
    # after the models: a snapshot stays while a kept or published model references it
    snapshots = prune_snapshots(
        settings.features_dir, protect=protected_snapshots(settings),
        keep=settings.feature_keep_snapshots if keep_snapshots is None else keep_snapshots)
    return {
        "models": models,
        "snapshots": snapshots,
        "backups": prune_backups(default_backup_root(settings), keep=keep_backups),
        "logs": prune_old_files(data_dir / "prefect", days=log_days, pattern="*.log"),
        "results": prune_old_files(data_dir / "prefect" / "results", days=log_days),
    }
