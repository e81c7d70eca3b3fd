"""Retention of offline feature snapshots: keep the newest K, never a protected one.

Which snapshots are protected is the caller's to say: the composition root (the CLI or the
maintenance flow, `flows.housekeeping.protected_snapshots`) asks the owners -- the model registry
for the snapshots its saved models were trained on, the serving store for the ones its versions
use, the online feature store for the ones it has materialized. This module only knows the
snapshots on disk.
"""

from __future__ import annotations

import logging
import shutil
from collections.abc import Iterable
from pathlib import Path

from features.snapshot import list_manifests, manifest_path

log = logging.getLogger(__name__)


def prune_snapshots(features_dir: Path, *, keep: int, protect: Iterable[str],
                    dry_run: bool = False) -> list[str]:
    """Delete feature snapshots beyond the newest `keep`, sparing every protected one.

    Args:
        features_dir: the feature store root (`settings.features_dir`).
        keep: snapshots kept by build time (`settings.feature_keep_snapshots`), >= 1.
        protect: snapshot ids never deleted (those some model or the online store references).
        dry_run: report what would be deleted without deleting.

    Returns:
        The deleted (or, with `dry_run`, deletable) snapshot ids, oldest first.
    """
    if keep < 1:
        raise ValueError(f"keep must be >= 1, got {keep}")
    manifests = list_manifests(features_dir)  # oldest first
    spared = {m.snapshot_id for m in manifests[-keep:]} | set(protect)
    doomed = [m for m in manifests if m.snapshot_id not in spared]
    if dry_run:
        return [m.snapshot_id for m in doomed]
    for manifest in doomed:
        # manifest first: without it the snapshot no longer exists for any reader
        manifest_path(features_dir, manifest.snapshot_id).unlink()
        for view in manifest.views.values():
            shutil.rmtree(Path(view.path).parent, ignore_errors=True)
        log.info("feature snapshot %s deleted (retention keep=%d)", manifest.snapshot_id, keep)
    return [m.snapshot_id for m in doomed]
