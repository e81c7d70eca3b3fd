"""The pipeline's features stage as one plain function (the flow wraps it in a task)."""

from __future__ import annotations

from pathlib import Path

from features.snapshot import Manifest, build_snapshot
from recsys.settings import Settings


def build_run_features(raw_files: dict[str, Path], *, snapshot_id: str, settings: Settings
                       ) -> Manifest:
    """Build every feature view for one run's validated batch."""
    return build_snapshot(raw_files, features_root=settings.features_dir, snapshot_id=snapshot_id)
