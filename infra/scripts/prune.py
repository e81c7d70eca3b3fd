"""Pruning of what the pipeline leaves behind under the data dir.

Rules (each function returns what it removed, so a flow can report it):

- feature snapshots: the feature store's own retention (`features.retention.prune_snapshots`):
  the newest `keep` plus every snapshot a kept or published model references.
- model versions: keep the newest `keep` plus every version MongoDB still lists (served, ready for
  rollback, or being published) -- a model directory is never deleted while it can be served.
- backups: keep the newest `keep` complete backups.
- logs and Prefect results: delete plain files older than `days`.

CLI::

    python -m infra.scripts.prune [--snapshots N] [--models N] [--backups N] [--log-days D]
"""

from __future__ import annotations

import argparse
import json
import logging
import shutil
import time
from collections.abc import Iterable
from pathlib import Path

from features.retention import prune_snapshots
from recsys.settings import Settings

log = logging.getLogger(__name__)


def _read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}


def list_models(models_dir: Path) -> list[str]:
    """Complete model versions (with `metadata.json`), oldest first (by `created_at`, then id)."""
    root = Path(models_dir)
    if not root.is_dir():
        return []
    entries = [(_read_json(p / "metadata.json").get("created_at", ""), p.name)
               for p in root.iterdir()
               if p.is_dir() and not p.name.startswith(".") and (p / "metadata.json").is_file()]
    return [version for _, version in sorted(entries)]


def served_versions(settings: Settings) -> set[str]:
    """Versions MongoDB knows (any status) plus the active and previous pointer."""
    from serving.store import open_store

    with open_store(settings) as store:
        versions = {str(doc["_id"]) for doc in store.list_versions()}
        state = store.active_state() or {}
    versions.update(str(v) for v in (state.get("version"), state.get("previous")) if v)
    return versions


def prune_model_versions(models_dir: Path, *, keep: int, protect: Iterable[str] = ()
                         ) -> list[str]:
    """Delete model directories beyond the newest `keep`, except the `protect`ed versions."""
    if keep < 1:
        raise ValueError("keep must be >= 1")
    models_dir = Path(models_dir)
    versions = list_models(models_dir)
    protected = set(protect) | set(versions[-keep:])
    removed = []
    for version in versions:
        if version in protected:
            continue
        shutil.rmtree(models_dir / version, ignore_errors=True)
        removed.append(version)
    if removed:
        log.info("pruned %d model version(s): %s", len(removed), removed)
    return removed


def prune_backups(backup_root: Path, *, keep: int) -> list[str]:
    """Delete complete backups beyond the newest `keep` (and stale `.partial` folders)."""
    from infra.scripts.backup import list_backups

    if keep < 1:
        raise ValueError("keep must be >= 1")
    backups = list_backups(backup_root)
    removed = [p.name for p in backups[:-keep]]
    for path in backups[:-keep]:
        shutil.rmtree(path, ignore_errors=True)
    root = Path(backup_root)
    if root.is_dir():
        day_ago = time.time() - 86400
        for partial in root.glob(".*.partial"):
            if partial.stat().st_mtime < day_ago:
                shutil.rmtree(partial, ignore_errors=True)
                removed.append(partial.name)
    return removed


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


def prune_all(settings: Settings, *, keep_snapshots: int = 5, keep_models: int = 5,
              keep_backups: int = 7, log_days: float = 14) -> dict[str, list[str]]:
    """Every pruning rule with the data dir's layout; MongoDB-listed versions are protected."""
    data_dir = Path(settings.data_dir)
    protect_models = served_versions(settings)
    removed_models = prune_model_versions(settings.models_dir, keep=keep_models,
                                          protect=protect_models)
    return {
        "models": removed_models,
        # after the models: a snapshot stays while a kept or published model references it
        "snapshots": prune_snapshots(settings, keep=keep_snapshots),
        "backups": prune_backups(data_dir / "backups", keep=keep_backups),
        "logs": prune_old_files(data_dir / "prefect", days=log_days, pattern="*.log"),
        "results": prune_old_files(data_dir / "prefect" / "results", days=log_days),
    }


def main(argv: list[str] | None = None) -> int:
    """CLI entry point; see the module docstring."""
    parser = argparse.ArgumentParser(prog="python -m infra.scripts.prune",
                                     description="Prune old snapshots, models, backups, logs.")
    parser.add_argument("--snapshots", type=int, default=5, help="feature snapshots kept")
    parser.add_argument("--models", type=int, default=5, help="model versions kept")
    parser.add_argument("--backups", type=int, default=7, help="backups kept")
    parser.add_argument("--log-days", type=float, default=14, help="age of logs deleted")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    removed = prune_all(Settings(), keep_snapshots=args.snapshots, keep_models=args.models,
                        keep_backups=args.backups, log_days=args.log_days)
    print(json.dumps(removed, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
