"""Crash-safe file writes for the model registry: a file is complete on disk or absent.

A write goes to a new file, is flushed and fsynced before anyone may rely on it; a replacement
goes to a temporary name in the same folder (so the rename stays on one file system) and is
renamed over the target, which readers therefore see either whole-old or whole-new.
"""

from __future__ import annotations

import json
import os
import secrets
import zipfile
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import IO, Any

import numpy as np

from recsys.hashing import file_sha256


def fsync_dir(folder: Path) -> None:
    """Flush a folder's entries (a rename or a new file in it) to disk."""
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def temporary_name(target: Path) -> Path:
    """A fresh dot-named sibling of `target` ending in `.tmp` (never listed as an artifact)."""
    return target.with_name(f".{target.name}.{secrets.token_hex(4)}.tmp")


def write_file(path: Path, write: Callable[[IO[bytes]], Any]) -> str:
    """Create `path` (it must not exist) with `write(fh)`, fsynced; returns its sha256."""
    with Path(path).open("xb") as fh:
        write(fh)
        fh.flush()
        os.fsync(fh.fileno())
    return file_sha256(path)


# Every member of an archive written by `write_npz` carries this time, so the same arrays always
# give the same bytes (and sha256): a rerun part of a partitioned stage rewrites an identical file.
_ZIP_TIME = (1980, 1, 1, 0, 0, 0)


def write_npz(path: Path, arrays: dict[str, np.ndarray]) -> str:
    """`write_file` of `arrays` as an uncompressed .npz that `np.load` reads; returns its sha256.

    Unlike `np.savez`, which stamps each member with the current time, the bytes depend only on
    the arrays (names in the given order).
    """
    def write(fh: IO[bytes]) -> None:
        with zipfile.ZipFile(fh, "w", compression=zipfile.ZIP_STORED, allowZip64=True) as archive:
            for name, array in arrays.items():
                member = zipfile.ZipInfo(f"{name}.npy", date_time=_ZIP_TIME)
                with archive.open(member, "w", force_zip64=True) as out:
                    np.lib.format.write_array(out, np.asanyarray(array), allow_pickle=False)
    return write_file(path, write)


def _json_default(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, (datetime, Path)):
        return str(value)
    raise TypeError(f"not JSON-serialisable: {type(value).__name__}")


def write_json(path: Path, document: dict[str, Any]) -> str:
    """`write_file` of `document` as indented, key-sorted JSON (numpy values converted)."""
    text = json.dumps(document, indent=2, sort_keys=True, default=_json_default) + "\n"
    return write_file(path, lambda fh: fh.write(text.encode()))


def replace_json(path: Path, document: dict[str, Any]) -> None:
    """Replace `path` with `document` atomically (temporary file, fsync, rename)."""
    path = Path(path)
    tmp = temporary_name(path)
    try:
        write_json(tmp, document)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    fsync_dir(path.parent)
