"""Prefect plumbing shared by every flow: cache keys, result storage, the publish lock.

Nothing here holds pipeline logic; it decides *how* Prefect runs the plain stage functions of
`ingest/`, `features/`, `training/` and `serving/`:

- Cache keys are built from content hashes of the inputs (file SHA-256s, the feature SQL, the
  relevant settings), never from DataFrames or paths alone (PITFALLS, "Prefect 3"), so an
  unchanged input is not recomputed even under a new run id.
- Results are persisted under `<data_dir>/prefect/results/` (caching needs persisted results).
- Publishing holds one slot of the global concurrency limit `recsys-publish` (limit 1), created on
  first use, so two runs never publish at once -- whether or not an operator created the limit.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from prefect.context import TaskRunContext

from recsys.hashing import file_sha256
from recsys.settings import Settings

log = logging.getLogger(__name__)

PUBLISH_LIMIT = "recsys-publish"
"""Name of the global concurrency limit every publish takes one slot of."""

PUBLISH_LOCK_TIMEOUT_S = 3600.0
"""How long a publish waits for another run's publish to finish before failing."""

# Settings that change what a stage produces; a change to any of them invalidates the cache.
TRAINING_SETTINGS = ("factors", "regularization", "alpha", "iterations", "seed", "eval_k",
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
    import features
    from features.raw_store import list_batches
    from features.stage import build_params

    settings: Settings = parameters["settings"]
    sql_dir = Path(features.__file__).parent / "sql"
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
    """Cache key of scoring: the model's files + feature content + list lengths."""
    model_dir = Path(parameters["model_dir"])
    return _key("score", {"model": {name: file_sha256(model_dir / name)
                                    for name in ("model.npz", "ids.npz")},
                          "manifest": _manifest_content(parameters["manifest_file"]),
                          "settings": _settings_part(parameters["settings"], SCORING_SETTINGS)})


def ensure_concurrency_limit(name: str = PUBLISH_LIMIT, limit: int = 1) -> None:
    """Create the global concurrency limit `name` if the Prefect API does not have it yet."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.actions import GlobalConcurrencyLimitCreate
    from prefect.exceptions import ObjectAlreadyExists, ObjectNotFound

    with get_client(sync_client=True) as client:
        try:
            client.read_global_concurrency_limit_by_name(name)
            return
        except ObjectNotFound:
            pass
        try:
            client.create_global_concurrency_limit(
                GlobalConcurrencyLimitCreate(name=name, limit=limit, active=True))
            log.info("created global concurrency limit %s (limit %d)", name, limit)
        except ObjectAlreadyExists:  # another run created it between our read and write
            pass


@contextmanager
def publish_lock(timeout_seconds: float = PUBLISH_LOCK_TIMEOUT_S) -> Iterator[None]:
    """Hold the one `recsys-publish` slot while the body runs (waits for another publish)."""
    from prefect.concurrency.sync import concurrency

    ensure_concurrency_limit()
    with concurrency(PUBLISH_LIMIT, occupy=1, strict=True, timeout_seconds=timeout_seconds):
        yield


def markdown_table(rows: dict[str, Any]) -> str:
    """A two-column markdown table of `rows` for an artifact."""
    return "\n".join(["| field | value |", "|---|---|",
                      *(f"| {key} | {value} |" for key, value in rows.items())])


def report_run_outcome(flow: Any, flow_run: Any, state: Any) -> None:
    """Flow state hook: push the run's outcome to the Prometheus Pushgateway, when configured.

    Gauges per flow (grouping key `job=recsys_pipeline, flow=<name>`):
    `recsys_pipeline_last_run_timestamp_seconds`, `recsys_pipeline_last_run_duration_seconds`,
    `recsys_pipeline_last_run_success` (1/0) and, on success,
    `recsys_pipeline_last_success_timestamp_seconds`. A push failure is logged, never raised.
    """
    settings = Settings()
    if not settings.pushgateway_url:
        return
    from prometheus_client import CollectorRegistry, Gauge, pushadd_to_gateway

    registry = CollectorRegistry()
    labels = {"flow": flow.name}
    now = state.timestamp.timestamp() if state.timestamp else None
    started = flow_run.start_time.timestamp() if flow_run.start_time else now
    success = bool(state.is_completed())
    Gauge("recsys_pipeline_last_run_timestamp_seconds", "End of the last run",
          registry=registry).set(now or 0)
    Gauge("recsys_pipeline_last_run_duration_seconds", "Duration of the last run",
          registry=registry).set((now or 0) - (started or 0))
    Gauge("recsys_pipeline_last_run_success", "1 if the last run completed, else 0",
          registry=registry).set(1 if success else 0)
    if success:
        Gauge("recsys_pipeline_last_success_timestamp_seconds", "End of the last successful run",
              registry=registry).set(now or 0)
    try:
        pushadd_to_gateway(settings.pushgateway_url, job="recsys_pipeline",
                           grouping_key=labels, registry=registry, timeout=5)
    except OSError as error:
        log.warning("could not push run outcome to %s: %s", settings.pushgateway_url, error)
