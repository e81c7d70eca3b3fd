"""A file-system model registry: one directory per model version.

Layout of `models_root/<version>/`:
    model.npz      implicit's own `model.save()` (np.savez, no pickle)
    ids.npz        user_ids and item_ids as unicode arrays (row/column order of the factors)
    metadata.json  version, created_at (UTC), params, metrics, library versions, shapes,
                   data_hash (sha256 of the training matrix and its ids), plus the caller's
                   metadata (feature snapshot id, source file hashes, search summary, ...)
    <extra files>  e.g. search_trials.jsonl / search_trials.md (the search log)
    scores.npz     added later by the score stage (top-N, similar items, popular, explanations)

A version directory is written under a temporary name and renamed into place, so a reader never sees
a half-written version; an existing version is never overwritten.
"""

from __future__ import annotations

import hashlib
import json
import logging
import platform
import re
import shutil
import tempfile
from datetime import UTC, datetime
from importlib.metadata import PackageNotFoundError, version as package_version
from pathlib import Path
from typing import Any

import numpy as np
from implicit.cpu.als import AlternatingLeastSquares
from threadpoolctl import threadpool_limits

from recsys.errors import ModelError
from training.data import InteractionMatrix
from training.evaluate import TrainResult

log = logging.getLogger(__name__)

MODEL_FILE = "model.npz"
IDS_FILE = "ids.npz"
METADATA_FILE = "metadata.json"
_VERSION_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
_RESERVED = ("version", "created_at", "params", "metrics", "libraries", "n_users", "n_items",
             "n_factors", "files", "data_hash")


def matrix_hash(data: InteractionMatrix) -> str:
    """sha256 over the ids and the CSR arrays: equal iff the training data is equal."""
    digest = hashlib.sha256()
    for ids in (data.user_ids, data.item_ids):
        digest.update("\x1f".join(ids.tolist()).encode())
        digest.update(b"\x1e")
    m = data.matrix
    for array in (m.indptr, m.indices, m.data):
        digest.update(np.ascontiguousarray(array).tobytes())
    return digest.hexdigest()


def library_versions() -> dict[str, str]:
    """Installed versions of the libraries a model depends on."""
    out = {"python": platform.python_version()}
    for name in ("implicit", "numpy", "scipy", "threadpoolctl", "pyarrow"):
        try:
            out[name] = package_version(name)
        except PackageNotFoundError:  # pragma: no cover - all are dependencies
            out[name] = "unknown"
    return out


def _json_default(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, (datetime, Path)):
        return str(value)
    raise TypeError(f"not JSON-serialisable: {type(value).__name__}")


def save_model(result: TrainResult, data: InteractionMatrix, *, models_root: Path, version: str,
               metadata: dict[str, Any], extra_files: dict[str, str] | None = None) -> Path:
    """Write `result.model` with its id maps and metadata to `models_root/version/`.

    Args:
        result: the training result (its model must be fitted on `data`).
        data: the matrix the model was fitted on (supplies user/item ids).
        models_root: the registry root (created if missing).
        version: the version id; letters, digits, '.', '_' and '-' only.
        metadata: extra JSON-serialisable keys (e.g. feature_snapshot_id); must not collide with
            the reserved keys.
        extra_files: file name -> text, written into the version directory (e.g. search logs).

    Returns:
        The version directory.

    Raises:
        ModelError: bad version id, the version exists, reserved metadata keys, or the model does
            not match `data`.
    """
    if not _VERSION_RE.match(version):
        raise ModelError(f"invalid model version id {version!r}")
    clash = sorted(set(metadata) & set(_RESERVED))
    if clash:
        raise ModelError(f"metadata keys {clash} are reserved")
    bad_names = sorted(n for n in (extra_files or {})
                       if n in (MODEL_FILE, IDS_FILE, METADATA_FILE) or not _VERSION_RE.match(n))
    if bad_names:
        raise ModelError(f"extra file names {bad_names} are invalid or reserved")
    model = result.model
    if model.user_factors.shape[0] != data.n_users or model.item_factors.shape[0] != data.n_items:
        raise ModelError(f"model ({model.user_factors.shape[0]} users x "
                         f"{model.item_factors.shape[0]} items) does not match the data "
                         f"({data.n_users} x {data.n_items})")
    models_root = Path(models_root)
    target = models_root / version
    if target.exists():
        raise ModelError(f"model version {version!r} already exists in {models_root}")
    models_root.mkdir(parents=True, exist_ok=True)

    document = {
        "version": version,
        "created_at": datetime.now(UTC).isoformat(),
        "params": result.params.to_dict(),
        "metrics": result.metrics,
        "libraries": library_versions(),
        "n_users": data.n_users,
        "n_items": data.n_items,
        "n_factors": int(model.item_factors.shape[1]),
        "files": [MODEL_FILE, IDS_FILE, METADATA_FILE, *sorted(extra_files or {})],
        "data_hash": matrix_hash(data),
        **metadata,
    }
    tmp = Path(tempfile.mkdtemp(prefix=f".{version}.", dir=models_root))
    try:
        model.save(str(tmp / MODEL_FILE))
        np.savez(tmp / IDS_FILE, user_ids=np.asarray(data.user_ids, dtype=str),
                 item_ids=np.asarray(data.item_ids, dtype=str))
        for name, text in (extra_files or {}).items():
            (tmp / name).write_text(text)
        (tmp / METADATA_FILE).write_text(
            json.dumps(document, indent=2, sort_keys=True, default=_json_default) + "\n")
        tmp.rename(target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    log.info("saved model version %s to %s", version, target)
    return target


def load_model(path: Path) -> tuple[AlternatingLeastSquares, np.ndarray, np.ndarray,
                                    dict[str, Any]]:
    """Load a version directory written by `save_model`.

    Returns:
        (model, user_ids, item_ids, metadata); ids are object arrays of str.
    """
    path = Path(path)
    missing = [f for f in (MODEL_FILE, IDS_FILE, METADATA_FILE) if not (path / f).is_file()]
    if missing:
        raise ModelError(f"model directory {path} lacks {missing}")
    with threadpool_limits(1, "blas"):  # implicit's constructor warns about threaded BLAS
        model = AlternatingLeastSquares.load(str(path / MODEL_FILE))
    with np.load(path / IDS_FILE, allow_pickle=False) as ids:
        user_ids = ids["user_ids"].astype(object)
        item_ids = ids["item_ids"].astype(object)
    metadata = json.loads((path / METADATA_FILE).read_text())
    if model.user_factors.shape[0] != len(user_ids) or model.item_factors.shape[0] != len(item_ids):
        raise ModelError(f"model in {path} does not match its ids.npz")
    return model, user_ids, item_ids, metadata


def list_models(models_root: Path) -> list[dict[str, Any]]:
    """Metadata of every complete version under `models_root`, newest first.

    Directories without a readable metadata.json (half-written or foreign) are skipped.
    """
    models_root = Path(models_root)
    if not models_root.is_dir():
        return []
    out = []
    for path in models_root.iterdir():
        meta_file = path / METADATA_FILE
        if path.name.startswith(".") or not meta_file.is_file():
            continue
        try:
            out.append(json.loads(meta_file.read_text()))
        except (OSError, json.JSONDecodeError) as exc:
            log.warning("skipping model directory %s: %s", path, exc)
    out.sort(key=lambda m: (str(m.get("created_at", "")), str(m.get("version", ""))), reverse=True)
    return out


def read_metadata(models_root: Path, version: str) -> dict[str, Any]:
    """metadata.json of one version; ModelError when it does not exist."""
    if not _VERSION_RE.match(version):
        raise ModelError(f"invalid model version id {version!r}")
    meta_file = Path(models_root) / version / METADATA_FILE
    if not meta_file.is_file():
        raise ModelError(f"no model version {version!r} in {models_root}")
    return json.loads(meta_file.read_text())
