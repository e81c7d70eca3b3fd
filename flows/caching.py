"""How Prefect caches the pipeline's tasks: content-hash cache keys and result storage.

Nothing here holds pipeline logic; it decides *how* Prefect runs the plain stage functions of
`ingest/`, `features/`, `training/` and `serving/`:

- Cache keys are built from content hashes of the inputs (file SHA-256s, the feature SQL, the
  relevant settings), never from DataFrames (which hash badly, PrefectHQ/prefect#16185) or paths
  alone, so an unchanged input is not recomputed even under a new run id.
- Results are persisted under `<data_dir>/prefect/results/` (caching needs persisted results).
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from prefect.context import TaskRunContext

import features as features_package
from features.stage import build_params
from ingest.raw_store import list_batches
from recsys.hashing import file_sha256
from recsys.settings import Settings
from training.registry import IDS_FILE, MODEL_FILE, model_metadata

# Settings that change what a stage produces; a change to any of them invalidates the cache.
TRAINING_SETTINGS = ("factors", "regularization", "alpha", "iterations", "refit_iterations",
                     "seed", "eval_k",
                     "holdout_fraction", "holdout_split", "weighting", "search",
                     "search_space_file", "search_objective", "search_max_trials",
                     "eval_max_users", "als_device")
SCORING_SETTINGS = ("top_n", "similar_n", "popular_n", "explain_n", "score_backend")


def results_dir(settings: Settings) -> Path:
    """Where Prefect persists task results (and so its cache) for this data dir."""
    return Path(settings.data_dir).resolve() / "prefect" / "results"


def result_storage(settings: Settings) -> Path:
    """The local result-store folder under the data dir (created if missing).

    A path, not an unsaved `LocalFileSystem` block: Prefect refuses unsaved blocks as result
    storage, and a path needs no server-side block.
    """
    path = results_dir(settings)
    path.mkdir(parents=True, exist_ok=True)
    return path


def tree_sha256(root: Path | str, pattern: str = "*") -> str:
    """One hash over the relative names and bytes of every file under `root` matching `pattern`."""
    root = Path(root)
    digest = hashlib.sha256()
    for path in sorted(p for p in root.rglob(pattern) if p.is_file()):
        digest.update(str(path.relative_to(root)).encode())
        digest.update(file_sha256(path).encode())
    return digest.hexdigest()


def _key(kind: str, parts: dict[str, Any]) -> str:
    blob = json.dumps(parts, sort_keys=True, default=str).encode()
    return f"{kind}-{hashlib.sha256(blob).hexdigest()[:32]}"


def _settings_part(settings: Settings, names: tuple[str, ...]) -> dict[str, Any]:
    return {name: getattr(settings, name) for name in names}


def _manifest_content(manifest_file: Path | str) -> dict[str, Any]:
    """The parts of a manifest that determine its data: source hashes, as-of, view rows/schemas."""
    data = json.loads(Path(manifest_file).read_text())
    return {"sources": {k: v.get("sha256") for k, v in data.get("sources", {}).items()},
            "as_of": data.get("as_of"),
            "views": {k: {"rows": v.get("rows"), "schema": v.get("schema")}
                      for k, v in data.get("views", {}).items()}}


def features_cache_key(context: TaskRunContext, parameters: dict[str, Any]) -> str:
    """Cache key of a feature build: the stored batches' content hashes, the feature
    definitions (SQL), the build parameters and the as-of time."""
    settings: Settings = parameters["settings"]
    sql_dir = Path(features_package.__file__).parent / "sql"
    batches = sorted(batch.batch_id for batch in list_batches(settings.store_dir))
    return _key("features", {"batches": batches, "sql": tree_sha256(sql_dir, "*.sql"),
                             "params": build_params(settings), "as_of": parameters.get("as_of")})


def train_cache_key(context: TaskRunContext, parameters: dict[str, Any]) -> str:
    """Cache key of a training run: feature content + model/evaluation settings + search flag."""
    settings: Settings = parameters["settings"]
    space = settings.search_space_file
    return _key("train", {"manifest": _manifest_content(parameters["manifest_file"]),
                          "settings": _settings_part(settings, TRAINING_SETTINGS),
                          "search_space": file_sha256(space) if space else None,
                          "search": parameters.get("search", False)})


def score_cache_key(context: TaskRunContext, parameters: dict[str, Any]) -> str:
    """Cache key of scoring: the model's files (their checksums, as the registry recorded them at
    save time) + feature content + list lengths."""
    checksums = model_metadata(Path(parameters["model_dir"])).get("checksums", {})
    return _key("score", {"model": {name: checksums.get(name) for name in (MODEL_FILE, IDS_FILE)},
                          "manifest": _manifest_content(parameters["manifest_file"]),
                          "settings": _settings_part(parameters["settings"], SCORING_SETTINGS)})
