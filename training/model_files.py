"""The files of one model version directory, shared by the registry and the scores layout.

`training.registry` owns `<models_root>/<version>/` (model, ids, training matrix, metadata) and
`training.scores` its `scores/` folder; both read metadata.json and .npz files through here, and
both raise the same `ModelError` naming the version and the file.
"""

from __future__ import annotations

import json
import zipfile
from pathlib import Path
from typing import Any

import numpy as np

from recsys.errors import ModelError

MODEL_FILE = "model.npz"
IDS_FILE = "ids.npz"
METADATA_FILE = "metadata.json"
#: the users x items matrix the model was fitted on (CSR arrays): scoring filters seen items
#: and explains recommendations with it, without re-reading the feature snapshot
MATRIX_FILE = "matrix.npz"


def version_error(model_dir: Path, name: str, problem: str) -> ModelError:
    """The one error shape: which version, which file, what is wrong, and where."""
    return ModelError(f"model version {Path(model_dir).name!r}: {name} {problem} "
                      f"({Path(model_dir) / name})")


def model_metadata(model_dir: Path) -> dict[str, Any]:
    """metadata.json of the version in `model_dir`.

    Raises:
        ModelError: no such version, or its metadata.json is unreadable.
    """
    model_dir = Path(model_dir)
    meta_file = model_dir / METADATA_FILE
    if not meta_file.is_file():
        if not model_dir.is_dir():
            raise ModelError(f"no model version {model_dir.name!r} in {model_dir.parent}")
        raise version_error(model_dir, METADATA_FILE, "is missing: the version is incomplete")
    try:
        document = json.loads(meta_file.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise version_error(model_dir, METADATA_FILE, f"is unreadable ({exc})") from exc
    if not isinstance(document, dict):
        raise version_error(model_dir, METADATA_FILE, "is not a JSON object")
    return document


def load_npz(model_dir: Path, name: str) -> dict[str, np.ndarray]:
    """Every array of the .npz `name` (a path relative to the version directory)."""
    path = Path(model_dir) / name
    if not path.is_file():
        raise version_error(model_dir, name, "is missing")
    try:
        with np.load(path, allow_pickle=False) as arrays:
            return {key: arrays[key] for key in arrays.files}
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as exc:
        raise version_error(model_dir, name, f"is unreadable, truncated or damaged ({exc})"
                            ) from exc
