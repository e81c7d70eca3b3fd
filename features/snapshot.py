"""Build an immutable feature snapshot from a validated batch with DuckDB.

Layout (Hive-style, one directory per view and snapshot)::

    <features_root>/<view>/snapshot=<snapshot_id>/data.parquet
    <features_root>/manifests/<snapshot_id>.json

The SQL for each view lives in `features/sql/<view>.sql` and reads three relations the builder
registers: `raw_users`, `raw_items` and `raw_interactions` (already cut at the snapshot's as-of
time, so no view can see a later event).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from importlib.resources import files
from pathlib import Path
from typing import Any

import duckdb

log = logging.getLogger(__name__)

VIEWS = ("interactions", "user_features", "item_features")
RAW_TABLES = ("users", "items", "interactions")


@dataclass(frozen=True, kw_only=True)
class ViewSnapshot:
    name: str
    path: str
    rows: int
    schema: list[dict[str, str]]


@dataclass(frozen=True, kw_only=True)
class Manifest:
    snapshot_id: str
    created_at: str
    as_of: str | None
    duckdb_version: str
    sources: dict[str, dict[str, Any]]
    views: dict[str, ViewSnapshot] = field(default_factory=dict)

    def view_path(self, name: str) -> Path:
        return Path(self.views[name].path)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Manifest:
        views = {k: ViewSnapshot(**v) for k, v in data.pop("views", {}).items()}
        return cls(views=views, **data)


def view_sql(name: str) -> str:
    return files("features").joinpath("sql", f"{name}.sql").read_text()


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def manifest_path(features_root: Path, snapshot_id: str) -> Path:
    return features_root / "manifests" / f"{snapshot_id}.json"


def load_manifest(features_root: Path, snapshot_id: str) -> Manifest:
    return Manifest.from_dict(json.loads(manifest_path(features_root, snapshot_id).read_text()))


def _sql_literal(path: Path) -> str:
    return "'" + str(path).replace("'", "''") + "'"


def build_snapshot(raw_files: dict[str, Path], *, features_root: Path, snapshot_id: str,
                   as_of: datetime | None = None) -> Manifest:
    """Build every feature view from normalized batch parquet files.

    Args:
        raw_files: "users", "items", "interactions" -> normalized parquet path.
        features_root: root of the offline store (`<data_dir>/features`).
        snapshot_id: names the snapshot; an existing snapshot with this id is an error.
        as_of: when given, only events at or before it are used (point-in-time builds).
    """
    missing = [name for name in RAW_TABLES if name not in raw_files]
    if missing:
        raise ValueError(f"raw files missing for {missing}")
    if manifest_path(features_root, snapshot_id).exists():
        raise FileExistsError(f"feature snapshot {snapshot_id} already exists in {features_root}")

    con = duckdb.connect()
    try:
        con.execute("SET TimeZone = 'UTC'")
        # Parquet row order is part of a snapshot's bytes: keep writes single-threaded and ordered.
        con.execute("SET preserve_insertion_order = true")
        con.execute(f"CREATE VIEW raw_users AS SELECT * FROM read_parquet("
                    f"{_sql_literal(raw_files['users'])})")
        con.execute(f"CREATE VIEW raw_items AS SELECT * FROM read_parquet("
                    f"{_sql_literal(raw_files['items'])})")
        cutoff = ""
        if as_of is not None:
            cutoff = f" WHERE \"timestamp\" <= TIMESTAMPTZ '{as_of.astimezone(UTC).isoformat()}'"
        con.execute(f"CREATE VIEW raw_interactions AS SELECT * FROM read_parquet("
                    f"{_sql_literal(raw_files['interactions'])}){cutoff}")

        views: dict[str, ViewSnapshot] = {}
        for name in VIEWS:
            out_dir = features_root / name / f"snapshot={snapshot_id}"
            out_dir.mkdir(parents=True, exist_ok=True)
            out_file = out_dir / "data.parquet"
            con.execute(f"COPY ({view_sql(name)}) TO {_sql_literal(out_file)} "
                        "(FORMAT parquet, COMPRESSION zstd)")
            rows = con.execute(f"SELECT COUNT(*) FROM read_parquet({_sql_literal(out_file)})"
                               ).fetchone()
            schema = con.execute(f"DESCRIBE SELECT * FROM read_parquet({_sql_literal(out_file)})"
                                 ).fetchall()
            views[name] = ViewSnapshot(
                name=name, path=str(out_file), rows=int(rows[0]) if rows else 0,
                schema=[{"name": col[0], "type": col[1]} for col in schema],
            )
            log.info("feature view %s: %d rows -> %s", name, views[name].rows, out_file)
    finally:
        con.close()

    manifest = Manifest(
        snapshot_id=snapshot_id,
        created_at=datetime.now(UTC).isoformat(),
        as_of=as_of.astimezone(UTC).isoformat() if as_of else None,
        duckdb_version=duckdb.__version__,
        sources={name: {"path": str(path), "sha256": file_sha256(Path(path))}
                 for name, path in raw_files.items()},
        views=views,
    )
    target = manifest_path(features_root, snapshot_id)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(manifest.to_dict(), indent=2))
    os.replace(tmp, target)  # the manifest appears only once every view is written
    return manifest
