"""Build immutable, point-in-time feature snapshots with DuckDB.

Layout (Hive-style, one directory per view and snapshot)::

    <features_root>/<view>/snapshot=<snapshot_id>/data.parquet
    <features_root>/manifests/<snapshot_id>.json

Every view of `features.registry.REGISTRY` is computed by its SQL over relations the builder
registers:

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
  applies among them. Computed in DuckDB, one grouped aggregate per use of `raw_interactions`;
  skipped when the raw store's markers prove every event distinct (batches whose event-time
  ranges do not meet, none repeating an event inside it: the usual daily batches).

Snapshots are immutable: a view's file is written to a hidden temporary folder and renamed into
place, the manifest is written last (atomically), and an existing snapshot id is never rebuilt.
The same inputs give byte-identical data files (rows are ordered, parquet is written with
insertion order preserved, float sums use Kahan summation and are stored as FLOAT).
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

from features.registry import DEFAULT_PARAMS, REGISTRY, FeatureView
from ingest.raw_store import (
    DATASETS,
    batch_content_hash,
    connect,
    events_may_repeat,
    list_batches,
    store_files,
)
from recsys.errors import FeatureStoreError
from recsys.hashing import file_sha256
from recsys.ids import check_id
from recsys.progress import ProgressCallback, report_progress

log = logging.getLogger(__name__)

VIEWS = tuple(REGISTRY)
RAW_TABLES = DATASETS
MANIFEST_FORMAT = 2
_BOOKKEEPING = ("_batch_id", "_effective_ts", "_seq")

__all__ = ["VIEWS", "Manifest", "SourceSet", "ViewSnapshot", "build_snapshot", "build_views",
           "list_manifests", "load_manifest", "manifest_path", "view_sql",
           "sources_from_raw_files", "sources_from_store"]


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
        created_at: build time (ISO-8601 UTC); with `build_seconds` the only fields that differ
            between two builds of the same inputs.
        as_of: the time the snapshot describes (ISO UTC): the requested cut-off, else the
            latest event time.
        duckdb_version: DuckDB that computed it.
        sources: per dataset, where the rows came from (paths or store root, and hashes).
        views: per view, its file, version, row count and schema.
        requested_as_of: the cut-off asked for (None: every event).
        params: build parameter values used.
        batches: source batches (`batch_id`, `content_hash`, per-file `source_hashes`).
        build_seconds: wall time of the build.
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

    def view_path(self, name: str) -> Path:
        return Path(self.views[name].path)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Manifest:
        data = dict(data)
        views = {k: ViewSnapshot(**v) for k, v in data.pop("views", {}).items()}
        return cls(views=views, **data)


@dataclass(frozen=True, kw_only=True)
class SourceSet:
    """The input files of a build.

    Attributes:
        users, items, interactions: parquet files (sorted).
        batches: the batches they belong to (id, content hash, per-file hashes).
        batch_order: interaction file (as in `interactions`) -> ingestion order of its batch;
            for an event carried by several batches the greatest order wins. Empty: one batch.
        events_distinct: no event occurs twice among the rows (the raw store knows it from
            its markers, `ingest.raw_store.events_may_repeat`); the build then skips grouping
            the rows by event identity.
        latest_wins: entity files carry the raw store's bookkeeping columns; dedupe by them.
        description: per dataset, what goes into the manifest's `sources`.
    """

    users: list[Path]
    items: list[Path]
    interactions: list[Path]
    batches: list[dict[str, Any]]
    latest_wins: bool
    description: dict[str, dict[str, Any]]
    batch_order: dict[str, int] = field(default_factory=dict)
    events_distinct: bool = False


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


def _lit(value: Path | str) -> str:
    return "'" + str(value).replace("'", "''") + "'"


def _listing(paths: list[Path]) -> str:
    return "[" + ", ".join(_lit(p) for p in paths) + "]"


def _iso(ts: datetime | None) -> str | None:
    return ts.astimezone(UTC).isoformat() if ts is not None else None


def _utc(ts: datetime) -> datetime:
    """`ts` in UTC; a naive value is taken to be UTC already (as the CLI does)."""
    return ts.replace(tzinfo=UTC) if ts.tzinfo is None else ts.astimezone(UTC)


# ------------------------------------------------------------------------------------- sources

def sources_from_raw_files(raw_files: dict[str, Path]) -> SourceSet:
    """Sources for one validated batch's normalized files (no raw store involved)."""
    content_hash, per_file = batch_content_hash(raw_files)
    return SourceSet(
        users=[Path(raw_files["users"])], items=[Path(raw_files["items"])],
        interactions=[Path(raw_files["interactions"])],
        batches=[{"batch_id": content_hash[:16], "content_hash": content_hash,
                  "source_hashes": per_file}],
        latest_wins=False,
        description={name: {"path": str(raw_files[name]), "sha256": per_file[name]}
                     for name in DATASETS},
    )


def sources_from_store(raw_root: Path, as_of: datetime | None) -> SourceSet:
    """Sources from the raw store: all committed batches, interaction partitions up to as-of.

    Raises:
        FeatureStoreError: the store holds no batch (or none visible at as-of).
    """
    batches = list_batches(raw_root)
    if as_of is not None:
        cut = _utc(as_of)
        batches = [b for b in batches if datetime.fromisoformat(b.effective_ts) <= cut]
    if not batches:
        raise FeatureStoreError(f"raw store {raw_root} has no batch"
                                + (f" visible at {_iso(as_of)}" if as_of else "")
                                + " (ingest one with ingest.stage.ingest_batch)")
    until = _utc(as_of).date() if as_of is not None else None
    inter = store_files(raw_root, "interactions", batches=batches, until=until)
    order = {str(path): batch.seq for batch in batches
             for path in store_files(raw_root, "interactions", batches=[batch], until=until)}
    files = {"users": store_files(raw_root, "users", batches=batches),
             "items": store_files(raw_root, "items", batches=batches),
             "interactions": inter}
    return SourceSet(
        users=files["users"], items=files["items"], interactions=inter,
        batches=[{"batch_id": b.batch_id, "content_hash": b.content_hash, "seq": b.seq,
                  "source_hashes": b.source_hashes} for b in batches],
        latest_wins=True,
        description={name: {"store": str(raw_root), "files": len(files[name])}
                     for name in DATASETS},
        batch_order=order,
        events_distinct=not events_may_repeat(batches),
    )


# ------------------------------------------------------------------------------------ relations

def _register_relations(con: duckdb.DuckDBPyConnection, sources: SourceSet,
                        cutoff: datetime | None) -> None:
    _register_interactions(con, sources, cutoff)
    for table, key, paths in (("users", "user_id", sources.users),
                              ("items", "item_id", sources.items)):
        relation = f"read_parquet({_listing(paths)}, union_by_name = true)"
        if sources.latest_wins:
            visible = (f" WHERE _effective_ts <= {_lit(cutoff.isoformat())}::TIMESTAMPTZ"
                       if cutoff else "")
            relation = (f"(SELECT * EXCLUDE ({', '.join(_BOOKKEEPING)}) FROM {relation}{visible} "
                        f"QUALIFY ROW_NUMBER() OVER (PARTITION BY {key} "
                        "ORDER BY _effective_ts DESC, _seq DESC) = 1)")
        columns = {row[0] for row in con.execute(f"DESCRIBE SELECT * FROM {relation}").fetchall()}
        if key not in columns:
            raise FeatureStoreError(f"{paths[0]}: column '{key}' missing (rule: entity key)")
        extra = []
        if table == "items":
            if "genres" not in columns:
                extra.append("CAST([] AS VARCHAR[]) AS genres")
            if "release_year" not in columns:
                extra.append("NULL::INTEGER AS release_year")
        select = ", ".join(["*", *extra])
        con.execute(f"CREATE VIEW raw_{table} AS SELECT {select} FROM {relation}")
    con.execute("CREATE VIEW item_genres AS SELECT item_id, UNNEST(genres) AS genre "
                "FROM raw_items WHERE genres IS NOT NULL")


def _register_interactions(con: duckdb.DuckDBPyConnection, sources: SourceSet,
                           cutoff: datetime | None) -> None:
    """`interaction_rows` (every visible row, with its batch's ingestion order) and
    `raw_interactions` (one row per event identity, the latest batch's values; module
    docstring, "Event identity"). When the sources guarantee distinct events
    (`SourceSet.events_distinct`) the grouping is skipped: the rows are the events."""
    columns = ("user_id, item_id, CAST(\"timestamp\" AS TIMESTAMPTZ) AS \"timestamp\", "
               "CAST(rating AS DOUBLE) AS rating, CAST(weight AS DOUBLE) AS weight, "
               "CAST(event_type AS VARCHAR) AS event_type")
    if not sources.interactions:
        con.execute(
            "CREATE VIEW interaction_rows AS SELECT NULL::VARCHAR AS user_id, "
            "NULL::VARCHAR AS item_id, NULL::TIMESTAMPTZ AS \"timestamp\", NULL::DOUBLE AS "
            "rating, NULL::DOUBLE AS weight, NULL::VARCHAR AS event_type, "
            "0::BIGINT AS batch_order WHERE false")
    else:
        where = f" WHERE \"timestamp\" <= {_lit(cutoff.isoformat())}::TIMESTAMPTZ" if cutoff else ""
        scan = (f"read_parquet({_listing(sources.interactions)}, union_by_name = true, "
                "hive_partitioning = false")
        if sources.batch_order and not sources.events_distinct:
            con.execute("CREATE TABLE interaction_files (_file VARCHAR, batch_order BIGINT)")
            con.executemany("INSERT INTO interaction_files VALUES (?, ?)",
                            [(str(path), sources.batch_order[str(path)])
                             for path in sources.interactions])
            con.execute(f"CREATE VIEW interaction_rows AS SELECT {columns}, f.batch_order "
                        f"FROM {scan}, filename = '_file') JOIN interaction_files AS f "
                        f"USING (_file){where}")
        else:
            con.execute(f"CREATE VIEW interaction_rows AS SELECT {columns}, "
                        f"0::BIGINT AS batch_order FROM {scan}){where}")
    if sources.events_distinct:
        con.execute("CREATE VIEW raw_interactions AS SELECT * EXCLUDE (batch_order) "
                    "FROM interaction_rows")
        return
    # One grouped aggregate (cheaper than a window): the winner's values come from the
    # greatest (batch order, rating, weight), so tied rows give the same values.
    con.execute(
        "CREATE VIEW raw_interactions AS SELECT user_id, item_id, \"timestamp\", "
        "arg_max_null(rating, winner) AS rating, arg_max_null(weight, winner) AS weight, "
        "event_type FROM (SELECT *, {'batch': batch_order, 'rating': rating, "
        "'weight': weight} AS winner FROM interaction_rows) "
        "GROUP BY user_id, item_id, \"timestamp\", event_type")


def _resolve_as_of(con: duckdb.DuckDBPyConnection, cutoff: datetime | None) -> datetime:
    if cutoff is not None:
        return cutoff
    row = con.execute("SELECT MAX(\"timestamp\") FROM interaction_rows").fetchone()
    latest = row[0] if row else None
    return latest.astimezone(UTC) if latest is not None else datetime(1970, 1, 1, tzinfo=UTC)


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
                progress: ProgressCallback | None = None) -> Manifest:
    """Build every registered view from `sources` into a new immutable snapshot.

    Args:
        sources: input files (`sources_from_raw_files` or `sources_from_store`).
        features_root: root of the offline store (`settings.features_dir`).
        snapshot_id: names the snapshot; an existing snapshot with this id is an error.
        as_of: cut-off (naive means UTC); only events at or before it are used.
        params: overrides of `features.registry.DEFAULT_PARAMS` (e.g. `half_life_days`).
        threads, memory_limit: DuckDB resource limits (defaults: DuckDB's).
        progress: told after each view is written (step ``build features``, views done,
            views registered).

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
    values = {**DEFAULT_PARAMS, **(params or {})}
    cutoff = _utc(as_of) if as_of is not None else None
    started = time.perf_counter()
    created_at = datetime.now(UTC)

    con = connect(threads=threads, memory_limit=memory_limit)
    written: list[Path] = []
    try:
        _register_relations(con, sources, cutoff)
        effective = _resolve_as_of(con, cutoff)
        con.execute(
            "CREATE TABLE build_params AS SELECT "
            f"{_lit(effective.isoformat())}::TIMESTAMPTZ AS as_of, "
            f"CAST({float(values['half_life_days'])} AS DOUBLE) AS half_life_days, "
            f"CAST({int(values['recent_days'])} AS INTEGER) AS recent_days, "
            f"CAST({int(values['top_genres'])} AS INTEGER) AS top_genres")
        views: dict[str, ViewSnapshot] = {}
        for view in REGISTRY.values():
            final_dir = features_root / view.name / f"snapshot={snapshot_id}"
            if final_dir.exists():  # left by a build that crashed before its manifest
                shutil.rmtree(final_dir)
            tmp_dir = features_root / view.name / f".snapshot={snapshot_id}.tmp"
            shutil.rmtree(tmp_dir, ignore_errors=True)
            tmp_dir.mkdir(parents=True)
            tmp_file = tmp_dir / "data.parquet"
            con.execute(f"COPY ({view.sql}) TO {_lit(tmp_file)} "
                        "(FORMAT parquet, COMPRESSION zstd)")
            written_rel = f"read_parquet({_lit(tmp_file)}, hive_partitioning = false)"
            meta = con.execute(f"SELECT COUNT(*) FROM {written_rel}").fetchone()
            schema = [{"name": c[0], "type": c[1]} for c in con.execute(
                f"DESCRIBE SELECT * FROM {written_rel}").fetchall()]
            _check_declared(view, schema)
            os.replace(tmp_dir, final_dir)
            out_file = final_dir / "data.parquet"
            written.append(final_dir)
            out_file.chmod(0o444)
            views[view.name] = ViewSnapshot(
                name=view.name, path=str(out_file), rows=int(meta[0]) if meta else 0,
                schema=schema, version=view.version, entity=view.entity, keys=list(view.keys),
                sha256=file_sha256(out_file), bytes=out_file.stat().st_size,
            )
            log.info("feature view %s (v %s): %d rows -> %s", view.name, view.version,
                     views[view.name].rows, out_file)
            report_progress(progress, "build features", len(views), len(REGISTRY))
    except BaseException:
        for folder in written:  # no manifest, so no snapshot: leave nothing half-built
            shutil.rmtree(folder, ignore_errors=True)
        raise
    finally:
        con.close()

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
    )
    target = manifest_path(features_root, snapshot_id)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(manifest.to_dict(), indent=2, default=str))
    os.replace(tmp, target)  # the snapshot exists once its manifest does
    return manifest


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
