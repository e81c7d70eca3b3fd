"""Build immutable, point-in-time feature snapshots with DuckDB.

Layout (Hive-style, one directory per view and snapshot)::

    <features_root>/<view>/snapshot=<snapshot_id>/data.parquet
    <features_root>/manifests/<snapshot_id>.json

Every view of `features.registry.REGISTRY` is computed by its SQL over relations the builder
registers (`features.relations`), in two phases (`features.parts`: per user part, then one
merge; a local build is one part):

* `raw_interactions` -- the events, cut at the as-of time (`timestamp <= as_of`), each event
  once (see "Event identity" below);
* `raw_users`, `raw_items` -- one row per entity (for the raw store: the latest row among the
  batches visible at as-of, see `ingest.raw_store`); `raw_items` always has `genres` (list) and
  `release_year`;
* `item_genres` -- `(item_id, genre)` pairs from `raw_items`;
* `build_params` -- one row: `as_of`, `half_life_days`, `recent_days`, `top_genres`.

As-of rules (written down because leaks here are silent):

1. An event counts iff `timestamp <= as_of` (UTC). With no as-of, every event counts and the
   snapshot's as-of is the latest event time, so recency features never depend on the wall clock.
2. Raw-store builds read only the date partitions on or before as-of's UTC date; users and items
   come from batches whose effective time (earliest event) is at or before as-of, latest wins.
3. Recency (decay, days_since_last, age, recent windows) is measured from the snapshot's as-of.

Event identity (so overlapping batches do not count an event twice):

- An event is identified by ``(user_id, item_id, timestamp, event_type)`` (a null event type is
  one value). Rows of the visible batches with the same identity are one event.
- When several batches carry the same event, the batch ingested last wins: its ``rating`` and
  ``weight`` are the event's. Ingestion order is the raw store's batch sequence (the commit
  marker's ``seq``, given under the store's lock), not batch ids or event dates. Repeats of an
  event inside one batch are one event too (a deterministic choice among them when their
  values differ).
- The as-of rules above decide which batches and rows are visible; the identity rule then
  applies among them (within a user part, since an event has one user). Computed in DuckDB,
  one grouped aggregate per use of `raw_interactions`;
  skipped when the raw store's markers prove every event distinct (batches whose event-time
  ranges do not meet, none repeating an event inside it: the usual daily batches).

Snapshots are immutable: a view's file is written to a hidden temporary folder and renamed into
place, the manifest is written last (atomically), and an existing snapshot id is never rebuilt.
The same inputs give byte-identical data files, whatever the number of user parts (rows are
ordered by the view's keys, float sums use Kahan summation and are stored as FLOAT, item rating
sums merge as exact DECIMAL sums, user views reach the parquet writer from an ordered table:
`features.parts.write_ordered`).
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import time
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import duckdb

from features.parts import (
    build_folder,
    build_user_part,
    merge_view,
    write_plan,
    write_user_parts,
)
from features.registry import DEFAULT_PARAMS, REGISTRY, FeatureView
from features.relations import lit, register_params, register_relations, resolve_as_of
from features.sources import SourceSet, sources_from_raw_files, utc
from ingest.raw_store import DATASETS, connect
from recsys.errors import FeatureStoreError
from recsys.hashing import file_sha256
from recsys.ids import check_id
from recsys.partitions import Mapper, serial_map
from recsys.progress import ProgressCallback, report_progress

log = logging.getLogger(__name__)

VIEWS = tuple(REGISTRY)
RAW_TABLES = DATASETS
MANIFEST_FORMAT = 2

__all__ = ["VIEWS", "Manifest", "ViewSnapshot", "build_snapshot", "build_views",
           "list_manifests", "load_manifest", "manifest_path", "view_sql"]


@dataclass(frozen=True, kw_only=True)
class ViewSnapshot:
    """One view's file in a snapshot."""

    name: str
    path: str
    rows: int
    schema: list[dict[str, str]]
    version: str = ""
    entity: str = ""
    keys: list[str] = field(default_factory=list)
    sha256: str = ""
    bytes: int = 0


@dataclass(frozen=True, kw_only=True)
class Manifest:
    """What a snapshot holds and how it was made (`manifests/<snapshot_id>.json`).

    Attributes:
        snapshot_id: the snapshot's name.
        created_at: build time (ISO-8601 UTC); with `build_seconds` and `partitions` the only
            fields that differ between two builds of the same inputs.
        as_of: the time the snapshot describes (ISO UTC): the requested cut-off, else the
            latest event time.
        duckdb_version: DuckDB that computed it.
        sources: per dataset, where the rows came from (paths or store root, and hashes).
        views: per view, its file, version, row count and schema.
        requested_as_of: the cut-off asked for (None: every event).
        params: build parameter values used.
        batches: source batches (`batch_id`, `content_hash`, per-file `source_hashes`).
        build_seconds: wall time of the build.
        partitions: user parts the build ran in (the data files do not depend on it).
    """

    snapshot_id: str
    created_at: str
    as_of: str | None
    duckdb_version: str
    sources: dict[str, dict[str, Any]]
    views: dict[str, ViewSnapshot] = field(default_factory=dict)
    requested_as_of: str | None = None
    params: dict[str, Any] = field(default_factory=dict)
    batches: list[dict[str, Any]] = field(default_factory=list)
    build_seconds: float = 0.0
    format_version: int = MANIFEST_FORMAT
    partitions: int = 1

    def view_path(self, name: str) -> Path:
        return Path(self.views[name].path)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Manifest:
        data = dict(data)
        views = {k: ViewSnapshot(**v) for k, v in data.pop("views", {}).items()}
        return cls(views=views, **data)


def view_sql(name: str) -> str:
    """The SQL text of a registered view."""
    return REGISTRY[name].sql


def manifest_path(features_root: Path, snapshot_id: str) -> Path:
    return Path(features_root) / "manifests" / f"{snapshot_id}.json"


def load_manifest(features_root: Path, snapshot_id: str) -> Manifest:
    """Read a snapshot's manifest (FeatureStoreError naming the file when absent)."""
    path = manifest_path(features_root, snapshot_id)
    if not path.exists():
        raise FeatureStoreError(f"feature snapshot {snapshot_id!r} not found ({path} missing)")
    return Manifest.from_dict(json.loads(path.read_text()))


def list_manifests(features_root: Path) -> list[Manifest]:
    """Every snapshot's manifest under `features_root`, oldest build first."""
    folder = Path(features_root) / "manifests"
    if not folder.is_dir():
        return []
    manifests = [Manifest.from_dict(json.loads(p.read_text())) for p in folder.glob("*.json")]
    return sorted(manifests, key=lambda m: (m.created_at, m.snapshot_id))


def _iso(ts: datetime | None) -> str | None:
    return ts.astimezone(UTC).isoformat() if ts is not None else None


def _check_declared(view: FeatureView, schema: list[dict[str, str]]) -> None:
    actual = {col["name"]: col["type"] for col in schema}
    problems = [f"'{c.name}' is {actual.get(c.name, 'missing')}, declared {c.dtype}"
                for c in view.columns if actual.get(c.name) != c.dtype]
    if problems:
        raise FeatureStoreError(f"feature view {view.name} (version {view.version}) does not "
                                f"match its declaration: {'; '.join(problems)}")


# ----------------------------------------------------------------------------------------- build

def build_views(sources: SourceSet, *, features_root: Path, snapshot_id: str,
                as_of: datetime | None = None, params: dict[str, Any] | None = None,
                threads: int | None = None, memory_limit: str | None = None,
                progress: ProgressCallback | None = None, partitions: int = 1,
                mapper: Mapper = serial_map) -> Manifest:
    """Build every registered view from `sources` into a new immutable snapshot.

    Two phases (`features.parts`): each of `partitions` user parts, run through `mapper`,
    writes its users' views and item partials; then this process merges them into one file
    per view. Any number of parts gives the same files, byte for byte.

    Args:
        sources: input files (`sources_from_raw_files` or `sources_from_store`).
        features_root: root of the offline store (`settings.features_dir`).
        snapshot_id: names the snapshot; an existing snapshot with this id is an error.
        as_of: cut-off (naive means UTC); only events at or before it are used.
        params: overrides of `features.registry.DEFAULT_PARAMS` (e.g. `half_life_days`).
        threads, memory_limit: DuckDB resource limits of every connection (default: DuckDB's).
        progress: told after each view is written (step ``build features``, views done,
            views registered).
        partitions: user parts (1: the local build, no hashing).
        mapper: runs the parts (`recsys.partitions.serial_map`: one after another, here).

    Returns:
        The snapshot's manifest (also written to `manifests/<snapshot_id>.json`).

    Raises:
        FileExistsError: the snapshot already exists.
        FeatureStoreError: a view's output does not match its declared columns.
    """
    features_root = Path(features_root)
    check_id(snapshot_id, kind="snapshot id")  # it names folders and MongoDB collections
    if manifest_path(features_root, snapshot_id).exists():
        raise FileExistsError(f"feature snapshot {snapshot_id} already exists in {features_root}")
    unknown = set(params or {}) - set(DEFAULT_PARAMS)
    if unknown:
        raise ValueError(f"unknown feature build parameter(s) {sorted(unknown)}; "
                         f"known: {sorted(DEFAULT_PARAMS)}")
    if partitions < 1:
        raise ValueError(f"partitions must be >= 1, got {partitions}")
    values = {**DEFAULT_PARAMS, **(params or {})}
    cutoff = utc(as_of) if as_of is not None else None
    started = time.perf_counter()
    created_at = datetime.now(UTC)

    folder = build_folder(features_root, snapshot_id)
    shutil.rmtree(folder, ignore_errors=True)  # left by a build that crashed
    con = connect(threads=threads, memory_limit=memory_limit)
    written: list[Path] = []
    try:
        register_relations(con, sources, cutoff)
        effective = resolve_as_of(con, sources, cutoff)
        register_params(con, effective, values)
        plan = write_plan(folder, sources=sources, cutoff=cutoff, as_of=effective,
                          params=values, partitions=partitions, threads=threads,
                          memory_limit=memory_limit)
        if partitions > 1:
            write_user_parts(con, sources, folder, partitions)
        mapper("build features", build_user_part,
               [(str(plan), part) for part in range(partitions)])
        views: dict[str, ViewSnapshot] = {}
        for view in REGISTRY.values():
            views[view.name] = _write_view(con, view, folder, partitions, features_root,
                                           snapshot_id, written)
            report_progress(progress, "build features", len(views), len(REGISTRY))
    except BaseException:
        for done in written:  # no manifest, so no snapshot: leave nothing half-built
            shutil.rmtree(done, ignore_errors=True)
        raise
    finally:
        con.close()
        shutil.rmtree(folder, ignore_errors=True)
        _remove_if_empty(folder.parent)

    manifest = Manifest(
        snapshot_id=snapshot_id,
        created_at=created_at.isoformat(),
        as_of=effective.isoformat(),
        requested_as_of=_iso(cutoff),
        duckdb_version=duckdb.__version__,
        sources=sources.description,
        views=views,
        params={name: values[name] for name in sorted(values)},
        batches=sources.batches,
        build_seconds=round(time.perf_counter() - started, 3),
        partitions=partitions,
    )
    target = manifest_path(features_root, snapshot_id)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(manifest.to_dict(), indent=2, default=str))
    os.replace(tmp, target)  # the snapshot exists once its manifest does
    return manifest


def _write_view(con: duckdb.DuckDBPyConnection, view: FeatureView, folder: Path,
                partitions: int, features_root: Path, snapshot_id: str,
                written: list[Path]) -> ViewSnapshot:
    """Merge one view into a hidden folder, check it, rename it into place, describe it."""
    final_dir = features_root / view.name / f"snapshot={snapshot_id}"
    if final_dir.exists():  # left by a build that crashed before its manifest
        shutil.rmtree(final_dir)
    tmp_dir = features_root / view.name / f".snapshot={snapshot_id}.tmp"
    shutil.rmtree(tmp_dir, ignore_errors=True)
    tmp_dir.mkdir(parents=True)
    rows = merge_view(con, view, folder, partitions, tmp_dir / "data.parquet")
    schema = [{"name": c[0], "type": c[1]} for c in con.execute(
        f"DESCRIBE SELECT * FROM read_parquet({lit(tmp_dir / 'data.parquet')}, "
        "hive_partitioning = false)").fetchall()]
    _check_declared(view, schema)
    os.replace(tmp_dir, final_dir)
    written.append(final_dir)
    out_file = final_dir / "data.parquet"
    out_file.chmod(0o444)
    log.info("feature view %s (v %s): %d rows -> %s", view.name, view.version, rows, out_file)
    return ViewSnapshot(name=view.name, path=str(out_file), rows=rows, schema=schema,
                        version=view.version, entity=view.entity, keys=list(view.keys),
                        sha256=file_sha256(out_file), bytes=out_file.stat().st_size)


def _remove_if_empty(folder: Path) -> None:
    try:
        folder.rmdir()
    except OSError:  # not empty (another build's folder) or already gone
        pass


def build_snapshot(raw_files: dict[str, Path], *, features_root: Path, snapshot_id: str,
                   as_of: datetime | None = None, params: dict[str, Any] | None = None
                   ) -> Manifest:
    """Build every feature view from one batch's normalized parquet files.

    Args:
        raw_files: "users", "items", "interactions" -> normalized parquet path.
        features_root: root of the offline store (`<data_dir>/features`).
        snapshot_id: names the snapshot; an existing snapshot with this id is an error.
        as_of: when given, only events at or before it are used (point-in-time builds).
        params: build parameter overrides (see `features.registry.DEFAULT_PARAMS`).
    """
    missing = [name for name in RAW_TABLES if name not in raw_files]
    if missing:
        raise ValueError(f"raw files missing for {missing}")
    return build_views(sources_from_raw_files(raw_files), features_root=features_root,
                       snapshot_id=snapshot_id, as_of=as_of, params=params)
