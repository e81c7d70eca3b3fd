"""The model registry: the only reader and writer of `<models_root>/<version>/`.

Layout of one version directory:
    model.npz      implicit's own `model.save()` (np.savez, no pickle)
    ids.npz        user_ids and item_ids as unicode arrays (row/column order of the factors)
    matrix.npz     the users x items matrix the model was fitted on (CSR indptr / indices / data):
                   scoring reads it instead of decoding the feature snapshot again
    metadata.json  version, created_at (UTC), params, metrics, library versions, shapes,
                   data_hash (sha256 of the training matrix and its ids), `files` (every file of
                   the version) and `checksums` (file name -> sha256), plus the caller's metadata
                   (feature snapshot id, source file hashes, search summary, ...)
    <extra files>  e.g. search_trials.jsonl / search_trials.md (the search log)
    scores/        added later, one file per user partition + one for items: `training.scores`
                   owns that folder (and reads the single scores.npz of older versions)

Writes are atomic, so a crash or a full disk never leaves a truncated artifact for a reader (or a
promote) to pick up: a version is written into `.<version>.<random>.partial`, renamed into place
once every file is fsynced (never overwriting one); score parts go to temporary files renamed into
place and count only once recorded in metadata.json. Dot-named leftovers of a crash are never
listed; `prune_models` deletes them after a day.

One error policy: reading a version that is missing, incomplete or damaged raises a `ModelError`
naming the version and the file. `list_models` reports such a version (`ModelInfo.problem`)
instead of raising, so one bad directory never hides the others.
"""

from __future__ import annotations

import logging
import platform
import shutil
import tempfile
import time
import zipfile
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from importlib.metadata import PackageNotFoundError
from importlib.metadata import version as package_version
from pathlib import Path
from typing import Any

import numpy as np
import scipy.sparse as sp
from implicit.cpu.als import AlternatingLeastSquares
from threadpoolctl import threadpool_limits

from recsys.errors import InvalidId, ModelError
from recsys.hashing import file_sha256
from recsys.ids import check_id, is_valid_id
from training.atomic_files import fsync_dir, write_file, write_json, write_npz
from training.data import InteractionMatrix, check_csr, matrix_hash
from training.evaluate import TrainResult
from training.model_files import (
    IDS_FILE,
    MATRIX_FILE,
    METADATA_FILE,
    MODEL_FILE,
    load_npz,
    model_metadata,
    version_error,
)
from training.scores import LEGACY_SCORES_FILE, SCORES_DIR, is_scored, verify_scores
# The scores readers belong to `training.scores`; re-exported for the registry's readers.
from training.scores import load_item_scores as load_item_scores
from training.scores import load_score_part as load_score_part
from training.scores import load_scores as load_scores
from training.scores import score_partitions as score_partitions

log = logging.getLogger(__name__)

_ARTIFACTS = (MODEL_FILE, IDS_FILE, MATRIX_FILE, METADATA_FILE, LEGACY_SCORES_FILE, SCORES_DIR)
_RESERVED = ("version", "created_at", "params", "metrics", "libraries", "n_users", "n_items",
             "n_factors", "files", "checksums", "data_hash", "scores")
# A crashed write's leftovers (dot-named) younger than this may still be in progress.
_STALE_AFTER_S = 86400.0


@dataclass(frozen=True)
class ModelInfo:
    """One version directory as `list_models` / `model_info` see it.

    Attributes:
        version: the version id (the directory name).
        path: the version directory.
        metadata: its metadata.json ({} when that is missing or unreadable).
        problem: why the version cannot be used (missing, incomplete, unreadable metadata);
            None for a complete version.
    """

    version: str
    path: Path
    metadata: dict[str, Any] = field(default_factory=dict)
    problem: str | None = None

    @property
    def ok(self) -> bool:
        return self.problem is None

    @property
    def created_at(self) -> str:
        return str(self.metadata.get("created_at", ""))

    @property
    def feature_snapshot(self) -> str | None:
        snapshot = self.metadata.get("feature_snapshot")
        return str(snapshot) if snapshot else None


# --------------------------------------------------------------------------- ids and errors

def check_version(version: str) -> str:
    """`version` when it follows the shared id rule (`recsys.ids`), else an InvalidId."""
    return check_id(version, kind="model version id")


def model_path(models_root: Path, version: str) -> Path:
    """The directory of `version` under `models_root` (the id is checked, not its existence)."""
    return Path(models_root) / check_version(version)


# --------------------------------------------------------------------------- save

def library_versions() -> dict[str, str]:
    """Installed versions of the libraries a model depends on."""
    out = {"python": platform.python_version()}
    for name in ("implicit", "numpy", "scipy", "threadpoolctl", "pyarrow"):
        try:
            out[name] = package_version(name)
        except PackageNotFoundError:  # pragma: no cover - all are dependencies
            out[name] = "unknown"
    return out


def save_model(result: TrainResult, data: InteractionMatrix, *, models_root: Path, version: str,
               metadata: dict[str, Any], extra_files: dict[str, str] | None = None) -> Path:
    """Write `result.model` with its id maps and metadata to `models_root/version/`, atomically.

    Args:
        result: the training result (its model must be fitted on `data`).
        data: the matrix the model was fitted on (supplies user/item ids).
        models_root: the registry root (created if missing).
        version: the version id (`check_version`).
        metadata: extra JSON-serialisable keys (e.g. feature_snapshot); must not collide with
            the reserved keys.
        extra_files: file name -> text, written into the version directory (e.g. search logs).

    Returns:
        The version directory.

    Raises:
        InvalidId: a bad version id.
        ModelError: the version exists, reserved metadata keys or file names, or the model does
            not match `data`. A failed write (e.g. a full disk) leaves no version.
    """
    check_version(version)
    clash = sorted(set(metadata) & set(_RESERVED))
    if clash:
        raise ModelError(f"metadata keys {clash} are reserved")
    extra_files = dict(extra_files or {})
    bad_names = sorted(n for n in extra_files if n in _ARTIFACTS or not is_valid_id(n))
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

    tmp = Path(tempfile.mkdtemp(prefix=f".{version}.", suffix=".partial", dir=models_root))
    try:
        checksums = {
            MODEL_FILE: write_file(tmp / MODEL_FILE, model.save),
            IDS_FILE: write_file(tmp / IDS_FILE, lambda fh: np.savez(
                fh, user_ids=np.asarray(data.user_ids, dtype=str),
                item_ids=np.asarray(data.item_ids, dtype=str))),
            MATRIX_FILE: write_npz(tmp / MATRIX_FILE, {
                "indptr": data.matrix.indptr, "indices": data.matrix.indices,
                "data": data.matrix.data}),
        }
        for name, text in extra_files.items():
            checksums[name] = write_file(tmp / name, lambda fh, t=text: fh.write(t.encode()))
        write_json(tmp / METADATA_FILE, {
            "version": version,
            "created_at": datetime.now(UTC).isoformat(),
            "params": result.params.to_dict(),
            "metrics": result.metrics,
            "libraries": library_versions(),
            "n_users": data.n_users,
            "n_items": data.n_items,
            "n_factors": int(model.item_factors.shape[1]),
            "files": [MODEL_FILE, IDS_FILE, MATRIX_FILE, METADATA_FILE, *sorted(extra_files)],
            "checksums": checksums,
            "data_hash": matrix_hash(data),
            **metadata,
        })
        fsync_dir(tmp)
        # the commit point: the version exists, complete, from here on
        tmp.rename(target)
        fsync_dir(models_root)
    except BaseException as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        if isinstance(exc, OSError):
            raise ModelError(f"model version {version!r}: writing to {models_root} failed "
                             f"({exc}); nothing was saved") from exc
        raise
    log.info("saved model version %s to %s", version, target)
    return target


# --------------------------------------------------------------------------- read

def read_metadata(models_root: Path, version: str) -> dict[str, Any]:
    """metadata.json of `version` under `models_root`; ModelError when it does not exist."""
    return model_metadata(model_path(models_root, version))


def load_model(model_dir: Path) -> tuple[AlternatingLeastSquares, np.ndarray, np.ndarray,
                                         dict[str, Any]]:
    """Load the version in `model_dir` (written by `save_model`).

    Returns:
        (model, user_ids, item_ids, metadata); ids are object arrays of str.

    Raises:
        ModelError: a file is missing, unreadable, or the model does not match its ids.
    """
    model_dir = Path(model_dir)
    missing = [f for f in (MODEL_FILE, IDS_FILE, METADATA_FILE) if not (model_dir / f).is_file()]
    if missing:
        raise ModelError(f"model version {model_dir.name!r} in {model_dir} lacks {missing}")
    metadata = model_metadata(model_dir)
    ids = load_npz(model_dir, IDS_FILE)
    try:
        user_ids = ids["user_ids"].astype(object)
        item_ids = ids["item_ids"].astype(object)
    except KeyError as exc:
        raise version_error(model_dir, IDS_FILE, f"lacks {exc}") from exc
    try:
        with threadpool_limits(1, "blas"):  # implicit's constructor warns about threaded BLAS
            model = AlternatingLeastSquares.load(str(model_dir / MODEL_FILE))
        n_users, n_items = model.user_factors.shape[0], model.item_factors.shape[0]
    except (OSError, ValueError, EOFError, AttributeError, zipfile.BadZipFile) as exc:
        raise version_error(model_dir, MODEL_FILE,
                            f"is unreadable, truncated or damaged ({exc})") from exc
    if n_users != len(user_ids) or n_items != len(item_ids):
        raise version_error(model_dir, MODEL_FILE, f"({n_users} x {n_items}) does not match "
                            f"{IDS_FILE} ({len(user_ids)} x {len(item_ids)})")
    return model, user_ids, item_ids, metadata


def load_training_matrix(model_dir: Path) -> sp.csr_matrix:
    """The users x items matrix the version was fitted on (rows = its user ids).

    Raises:
        ModelError: the version has no matrix.npz (saved before it was kept), or the file is
            unreadable or does not fit the model's shape.
    """
    model_dir = Path(model_dir)
    metadata = model_metadata(model_dir)
    arrays = load_npz(model_dir, MATRIX_FILE)
    shape = (int(metadata.get("n_users", -1)), int(metadata.get("n_items", -1)))
    try:
        matrix = sp.csr_matrix((arrays["data"], arrays["indices"], arrays["indptr"]),
                               shape=shape, copy=False)
        return check_csr(matrix, name=f"{model_dir.name}/{MATRIX_FILE}")
    except (KeyError, ValueError, ModelError) as exc:
        raise version_error(model_dir, MATRIX_FILE, f"does not hold a {shape} CSR matrix "
                            f"({exc})") from exc


def verify_model(model_dir: Path, *, scores: bool = False) -> dict[str, Any]:
    """Check that every file of a version is present, intact and loadable; its metadata.

    Each file listed in metadata.json (score parts included) must exist and match its recorded
    sha256 (versions saved before checksums skip that), every .npz must pass its zip CRC check,
    the model must load and match its ids, and scores (when present, or required by
    `scores=True`, as before a publish) must cover every user once and every item
    (`training.scores.verify_scores`).

    Raises:
        ModelError: naming the version and the first file that fails.
    """
    model_dir = Path(model_dir)
    metadata = model_metadata(model_dir)
    checksums: dict[str, str] = metadata.get("checksums", {})
    names = [n for n in metadata.get("files", []) if n != METADATA_FILE]
    names = [*dict.fromkeys([MODEL_FILE, IDS_FILE, *names])]
    scored = is_scored(model_dir)
    if scores and not scored:
        raise version_error(model_dir, SCORES_DIR, "is missing: the version was never scored")
    for name in names:
        path = model_dir / name
        if not path.is_file():
            raise version_error(model_dir, name, "is missing")
        if name in checksums and file_sha256(path) != checksums[name]:
            raise version_error(model_dir, name, "does not match its recorded sha256 "
                                "(truncated or changed after it was written)")
        if name.endswith(".npz"):
            try:
                with zipfile.ZipFile(path) as archive:
                    bad = archive.testzip()
            except (OSError, zipfile.BadZipFile) as exc:
                raise version_error(model_dir, name, f"is not a readable npz archive ({exc})"
                                    ) from exc
            if bad is not None:
                raise version_error(model_dir, name, f"has a damaged member {bad!r}")
    _, user_ids, item_ids, _ = load_model(model_dir)
    if scored:
        verify_scores(model_dir, n_users=len(user_ids), n_items=len(item_ids))
    return metadata


# --------------------------------------------------------------------------- list

def _inspect(path: Path) -> ModelInfo:
    try:
        check_version(path.name)
        metadata = model_metadata(path)
    except (InvalidId, ModelError) as error:
        return ModelInfo(version=path.name, path=path, problem=str(error))
    missing = [f for f in (MODEL_FILE, IDS_FILE) if not (path / f).is_file()]
    problem = f"model version {path.name!r} in {path} lacks {missing}" if missing else None
    return ModelInfo(version=path.name, path=path, metadata=metadata, problem=problem)


def model_info(models_root: Path, version: str) -> ModelInfo:
    """The state of one version (its `problem` says when it is missing or broken)."""
    return _inspect(model_path(models_root, version))


def list_models(models_root: Path) -> list[ModelInfo]:
    """Every version directory under `models_root`, newest first (by created_at, then id).

    A broken version (unreadable or missing metadata, missing model files) is listed with its
    `problem` and logged as a warning, never raised; in-progress and crashed writes (dot-named)
    are not listed. Broken versions sort last.
    """
    models_root = Path(models_root)
    if not models_root.is_dir():
        return []
    infos = [_inspect(path) for path in models_root.iterdir()
             if path.is_dir() and not path.name.startswith(".")]
    for info in infos:
        if info.problem:
            log.warning("broken model version: %s", info.problem)
    infos.sort(key=lambda i: (i.ok, i.created_at, i.version), reverse=True)
    return infos


def referenced_snapshots(models_root: Path) -> set[str]:
    """The feature snapshot ids the saved versions were trained on (to protect from retention).

    Raises:
        ModelError: a version's metadata is unreadable, so what it references is unknown (a
            snapshot must never be deleted under a model because the check could not run).
    """
    refs: set[str] = set()
    for info in list_models(models_root):
        # a version without metadata.json references nothing readable: a foreign folder or one
        # `prune_models` was deleting
        if not info.metadata and (info.path / METADATA_FILE).exists():
            raise ModelError(f"{info.problem}; cannot tell which feature snapshot it uses")
        if info.feature_snapshot:
            refs.add(info.feature_snapshot)
    return refs


# --------------------------------------------------------------------------- prune

def _remove_stale_leftovers(models_root: Path) -> list[str]:
    """Delete what crashed writes left (dot-named partial folders and temporary files)."""
    cutoff = time.time() - _STALE_AFTER_S
    removed = []
    leftovers = [*models_root.glob(".*.partial"), *models_root.glob("*/.*.tmp"),
                 *models_root.glob(f"*/{SCORES_DIR}/.*.tmp")]
    for path in leftovers:
        try:
            if path.stat().st_mtime >= cutoff:
                continue
        except FileNotFoundError:
            continue
        if path.is_dir():
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink(missing_ok=True)
        removed.append(str(path.relative_to(models_root)))
    return removed


def prune_models(models_root: Path, *, keep: int, protect: Iterable[str] = ()) -> list[str]:
    """Delete complete versions beyond the newest `keep`, except the `protect`ed ones.

    Broken versions are reported by `list_models` and left alone (their age is unknown); leftovers
    of writes that crashed more than a day ago are deleted.

    Args:
        models_root: the registry root.
        keep: complete versions kept, newest by created_at (>= 1).
        protect: versions never deleted (e.g. every version the serving store still lists).

    Returns:
        The deleted versions, oldest first.
    """
    if keep < 1:
        raise ValueError(f"keep must be >= 1, got {keep}")
    models_root = Path(models_root)
    if not models_root.is_dir():
        return []
    complete = [info for info in list_models(models_root) if info.ok]   # newest first
    kept = {info.version for info in complete[:keep]} | set(protect)
    doomed = [info for info in reversed(complete) if info.version not in kept]
    for info in doomed:
        # metadata first: without it the version is no longer complete for any reader
        (info.path / METADATA_FILE).unlink(missing_ok=True)
        shutil.rmtree(info.path, ignore_errors=True)
    leftovers = _remove_stale_leftovers(models_root)
    if doomed or leftovers:
        log.info("pruned model versions %s (keep=%d) and leftovers %s",
                 [i.version for i in doomed], keep, leftovers)
    return [info.version for info in doomed]
