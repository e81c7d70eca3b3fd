"""The scores of a model version: the only reader and writer of `<models_root>/<version>/scores/`.

Layout (the contract the publish stage reads through the functions here):

    scores/users-<p>-of-<n>.npz   one per user partition p of n (`recsys.partitions.partition_of`
                                  of the user id): user_index (int64 rows of the model's user ids,
                                  ascending), rec_items / rec_scores (rows, N), and with
                                  explanations rec_explain_items / rec_explain_scores (rows, N, E)
    scores/items.npz              similar_items / similar_scores (n_items, M), popular_items /
                                  popular_scores (P,)

Each part is written by a part function of `training.scoring`, possibly on another machine and
possibly twice (a retried task): `write_score_part` writes it under a temporary name and renames
it over the final one, with bytes that depend only on the arrays, so a rerun leaves the same file.
The version counts as scored only once `commit_scores` has checked that every part is there and
recorded the layout and each file's sha256 in metadata.json (one writer, after all parts);
`start_scores` first withdraws any earlier scores. Versions scored before this layout hold one
`scores.npz` with whole arrays; they read as a single partition.
"""

from __future__ import annotations

import logging
import os
import shutil
from pathlib import Path
from typing import Any

import numpy as np

from recsys.errors import ModelError
from training.atomic_files import fsync_dir, replace_json, temporary_name, write_npz
from training.model_files import METADATA_FILE, load_npz, model_metadata, version_error

log = logging.getLogger(__name__)

SCORES_DIR = "scores"
ITEMS_PART = f"{SCORES_DIR}/items.npz"
#: the single scores file of versions scored before the partitioned layout
LEGACY_SCORES_FILE = "scores.npz"
USER_ARRAYS = ("user_index", "rec_items", "rec_scores")
EXPLAIN_ARRAYS = ("rec_explain_items", "rec_explain_scores")
ITEM_ARRAYS = ("similar_items", "similar_scores", "popular_items", "popular_scores")
#: arrays `load_scores` always returns (explanations are optional)
SCORE_ARRAYS = ("rec_items", "rec_scores", *ITEM_ARRAYS)
_LAYOUT_KEY = "scores"


def user_part_name(part: int, n_partitions: int) -> str:
    """The file of user partition `part` of `n_partitions`, relative to the version directory."""
    if not 0 <= part < n_partitions:
        raise ModelError(f"partition {part} is not in [0, {n_partitions})")
    return f"{SCORES_DIR}/users-{part:05d}-of-{n_partitions:05d}.npz"


def scores_path(model_dir: Path) -> Path:
    """The scores folder of the version in `model_dir` (whether or not it was scored)."""
    return Path(model_dir) / SCORES_DIR


# --------------------------------------------------------------------------- write

def start_scores(model_dir: Path) -> None:
    """Withdraw the version's scores before it is (re)scored: unrecord them in metadata.json, then
    delete their files (parts of an earlier partition count would otherwise linger)."""
    model_dir = Path(model_dir)
    document = model_metadata(model_dir)
    recorded = _scored_files(document)
    if recorded or _LAYOUT_KEY in document:
        document["files"] = [f for f in document.get("files", []) if f not in recorded]
        document["checksums"] = {k: v for k, v in document.get("checksums", {}).items()
                                 if k not in recorded}
        document.pop(_LAYOUT_KEY, None)
        replace_json(model_dir / METADATA_FILE, document)
    (model_dir / LEGACY_SCORES_FILE).unlink(missing_ok=True)
    shutil.rmtree(scores_path(model_dir), ignore_errors=True)
    scores_path(model_dir).mkdir()
    fsync_dir(model_dir)


def write_score_part(model_dir: Path, name: str, arrays: dict[str, np.ndarray]) -> str:
    """Write one part file (`user_part_name` or `ITEMS_PART`) atomically; returns its sha256.

    Idempotent: the same arrays give the same bytes, and a rewrite replaces the file whole.

    Raises:
        ModelError: the name or the arrays do not fit the layout, or the write failed.
    """
    model_dir = Path(model_dir)
    wanted = ITEM_ARRAYS if name == ITEMS_PART else USER_ARRAYS
    if not name.startswith(f"{SCORES_DIR}/") or any(key not in arrays for key in wanted):
        raise ModelError(f"model version {model_dir.name!r}: score part {name} needs the arrays "
                         f"{wanted}, got {sorted(arrays)}")
    target = model_dir / name
    tmp = temporary_name(target)
    try:
        digest = write_npz(tmp, arrays)
        os.replace(tmp, target)
        fsync_dir(target.parent)
    except OSError as exc:
        raise ModelError(f"model version {model_dir.name!r}: writing {name} failed ({exc}); the "
                         "version stays unscored") from exc
    finally:
        tmp.unlink(missing_ok=True)
    return digest


def commit_scores(model_dir: Path, n_partitions: int, checksums: dict[str, str], *,
                  explained: bool) -> Path:
    """Record the finished parts in metadata.json: from here on the version is scored.

    Args:
        model_dir: the version.
        n_partitions: how many user parts were written.
        checksums: part name -> sha256, as `write_score_part` returned them.
        explained: whether the user parts carry explanations.

    Returns:
        The scores folder.

    Raises:
        ModelError: a part is missing.
    """
    model_dir = Path(model_dir)
    names = [*(user_part_name(p, n_partitions) for p in range(n_partitions)), ITEMS_PART]
    # the checksums themselves are checked by `verify_model` (before every publish)
    for name in names:
        if name not in checksums or not (model_dir / name).is_file():
            raise version_error(model_dir, name, "was not written: the version stays unscored")
    document = model_metadata(model_dir)
    files = [f for f in document.get("files", []) if f not in names]
    document["files"] = [*files, *names]
    document["checksums"] = {**document.get("checksums", {}),
                             **{name: checksums[name] for name in names}}
    document[_LAYOUT_KEY] = {"partitions": n_partitions, "explained": explained}
    replace_json(model_dir / METADATA_FILE, document)
    log.info("scores of model version %s: %d user part(s) + items", model_dir.name,
             n_partitions)
    return scores_path(model_dir)


def _scored_files(document: dict[str, Any]) -> list[str]:
    return [f for f in document.get("files", [])
            if f == LEGACY_SCORES_FILE or f.startswith(f"{SCORES_DIR}/")]


# --------------------------------------------------------------------------- read

def _layout(model_dir: Path) -> dict[str, Any] | None:
    """{"partitions", "explained"}; {"partitions": 1, "legacy": True} for scores.npz; None when
    the version was never scored."""
    document = model_metadata(model_dir)
    if _LAYOUT_KEY in document:
        return dict(document[_LAYOUT_KEY])
    if (Path(model_dir) / LEGACY_SCORES_FILE).is_file():
        return {"partitions": 1, "legacy": True}
    return None


def is_scored(model_dir: Path) -> bool:
    """Whether the version has committed scores (either layout)."""
    return _layout(model_dir) is not None


def _require_layout(model_dir: Path) -> dict[str, Any]:
    layout = _layout(model_dir)
    if layout is None:
        raise version_error(model_dir, SCORES_DIR, "is missing: the version was never scored")
    return layout


def _load_legacy(model_dir: Path) -> dict[str, np.ndarray]:
    arrays = load_npz(model_dir, LEGACY_SCORES_FILE)
    missing = [key for key in SCORE_ARRAYS if key not in arrays]
    if missing:
        raise version_error(model_dir, LEGACY_SCORES_FILE, f"lacks arrays {missing}")
    return arrays


def score_partitions(model_dir: Path) -> int:
    """How many user parts the version's scores have.

    Raises:
        ModelError: the version was never scored.
    """
    return int(_require_layout(model_dir)["partitions"])


def load_score_part(model_dir: Path, part: int) -> dict[str, np.ndarray]:
    """User part `part`: user_index, rec_items, rec_scores (+ rec_explain_items/_scores).

    Raises:
        ModelError: never scored, no such part, or its file is missing, damaged or incomplete.
    """
    layout = _require_layout(model_dir)
    if layout.get("legacy"):
        if part != 0:
            raise ModelError(f"partition {part} is not in [0, 1)")
        whole = _load_legacy(model_dir)
        out = {"user_index": np.arange(len(whole["rec_items"]), dtype=np.int64)}
        out.update({k: whole[k] for k in (*USER_ARRAYS[1:], *EXPLAIN_ARRAYS) if k in whole})
        return out
    name = user_part_name(part, int(layout["partitions"]))
    arrays = load_npz(model_dir, name)
    wanted = (*USER_ARRAYS, *EXPLAIN_ARRAYS) if layout.get("explained") else USER_ARRAYS
    missing = [key for key in wanted if key not in arrays]
    if missing:
        raise version_error(model_dir, name, f"lacks arrays {missing}")
    return arrays


def load_item_scores(model_dir: Path) -> dict[str, np.ndarray]:
    """similar_items, similar_scores, popular_items, popular_scores.

    Raises:
        ModelError: never scored, or the items file is missing, damaged or incomplete.
    """
    if _require_layout(model_dir).get("legacy"):
        whole = _load_legacy(model_dir)
        return {key: whole[key] for key in ITEM_ARRAYS}
    arrays = load_npz(model_dir, ITEMS_PART)
    missing = [key for key in ITEM_ARRAYS if key not in arrays]
    if missing:
        raise version_error(model_dir, ITEMS_PART, f"lacks arrays {missing}")
    return arrays


def load_scores(model_dir: Path) -> dict[str, np.ndarray]:
    """Every score array of the version, rows in the model's user order: rec_items, rec_scores
    (n_users, N), the arrays of `load_item_scores`, and rec_explain_items / rec_explain_scores
    (n_users, N, E) when the version was scored with explanations.

    Raises:
        ModelError: the version was never scored, or a part is missing, unreadable or does not
            hold its arrays, or the parts do not cover each user exactly once.
    """
    model_dir = Path(model_dir)
    parts = [load_score_part(model_dir, p) for p in range(score_partitions(model_dir))]
    index = np.concatenate([part["user_index"] for part in parts])
    n_users = len(index)
    if not np.array_equal(np.sort(index), np.arange(n_users)):
        raise version_error(model_dir, SCORES_DIR, "user parts do not cover each user once")
    out: dict[str, np.ndarray] = {}
    for key in (*USER_ARRAYS[1:], *EXPLAIN_ARRAYS):
        if key not in parts[0]:
            continue
        stacked = np.concatenate([part[key] for part in parts])
        whole = np.empty_like(stacked)
        whole[index] = stacked
        out[key] = whole
    out.update(load_item_scores(model_dir))
    return out


def verify_scores(model_dir: Path, *, n_users: int, n_items: int) -> None:
    """Every part holds its arrays with matching rows, and the parts cover each user once.

    (Checksums are checked by `training.registry.verify_model` with the version's other files.)

    Raises:
        ModelError: naming the version and the first part that fails.
    """
    model_dir = Path(model_dir)
    seen = np.zeros(n_users, dtype=np.int64)
    for part in range(score_partitions(model_dir)):
        arrays = load_score_part(model_dir, part)
        index = arrays["user_index"]
        rows = {key: arrays[key].shape[0] for key in arrays}
        if len(set(rows.values())) != 1 or (len(index) and (index.min() < 0
                                                            or index.max() >= n_users)):
            raise version_error(model_dir, f"{SCORES_DIR} part {part}", f"has rows {rows} "
                                f"(user_index must be in [0, {n_users}))")
        np.add.at(seen, index, 1)
    if not np.all(seen == 1):
        raise version_error(model_dir, SCORES_DIR, f"user parts cover {int((seen > 0).sum())} "
                            f"of {n_users} users, {int((seen > 1).sum())} more than once")
    items = load_item_scores(model_dir)
    for key in ("similar_items", "similar_scores"):
        if items[key].shape[0] != n_items:
            raise version_error(model_dir, ITEMS_PART, f"array {key} has {items[key].shape[0]} "
                                f"rows, expected {n_items}")
