"""The two phases of a feature build: per user part, then one merge.

1. `build_user_part` (one call per part, through the caller's `Mapper`): the part's users'
   events and user rows (`recsys.partitions.partition_of` of the user id), every item. It
   writes the views of users and (user, item) pairs for those users -- complete, since a
   user's events are all in one part -- and the partial aggregates the item views read
   (`features.registry.PARTIALS`).
2. `merge_view` (in the caller): a user view is the parts' rows in key order; an item view is
   its SQL over every part's partials, the items and the build parameters. The files are the
   same, byte for byte, for any number of parts.

A local build is the same with one part (no hashing, no filtering; its files are the views).
Everything a part needs is in the plan file (`write_plan`): part functions take that path and
a part number, write only under the build folder (`<features_root>/.build/<snapshot id>/`,
atomically per part) and return their row counts, so a part rerun after a lost worker redoes
exactly its own work. On a Dask worker a part's DuckDB keeps within a share of the worker's
memory limit (`recsys.partitions.part_memory_limit`) and spills to the machine's temp folder.
"""

from __future__ import annotations

import contextlib
import errno
import json
import logging
import os
import shutil
import tempfile
import uuid
from datetime import datetime
from pathlib import Path
from typing import Any

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq

from features.registry import PARTIALS, REGISTRY, FeatureView, partial_sql
from features.relations import listing, lit, register_params, register_relations
from features.sources import SourceSet
from ingest.raw_store import connect
from recsys.partitions import part_memory_limit, partition_of

log = logging.getLogger(__name__)

PLAN_FILE = "plan.json"
USER_PARTS_FILE = "user_parts.parquet"
PARQUET = "(FORMAT parquet, COMPRESSION zstd)"
NO_HIVE = "hive_partitioning = false"  # part folders are named part=<n>


def build_folder(features_root: Path, snapshot_id: str) -> Path:
    """Where a snapshot's build keeps its plan and part files until the merge."""
    return Path(features_root) / ".build" / snapshot_id


def part_folder(folder: Path, part: int) -> Path:
    return folder / f"part={part}"


def write_plan(folder: Path, *, sources: SourceSet, cutoff: datetime | None, as_of: datetime,
               params: dict[str, Any], partitions: int, threads: int | None,
               memory_limit: str | None) -> Path:
    """Write what every part needs (plain JSON) and return the plan file's path."""
    folder.mkdir(parents=True, exist_ok=True)
    plan = {"sources": sources.to_dict(), "partitions": partitions,
            "cutoff": cutoff.isoformat() if cutoff else None, "as_of": as_of.isoformat(),
            "params": params, "threads": threads, "memory_limit": memory_limit}
    path = folder / PLAN_FILE
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(plan, indent=2))
    os.replace(tmp, path)
    return path


def write_user_parts(con: duckdb.DuckDBPyConnection, sources: SourceSet, folder: Path,
                     partitions: int) -> Path:
    """`user_parts.parquet`: every user id of the sources with its part (`partition_of`,
    computed once, vectorised, on the distinct ids; parts join it in DuckDB)."""
    selects = [f"SELECT user_id FROM read_parquet({listing(paths)}, union_by_name = true, "
               f"{NO_HIVE})"
               for paths in (sources.interactions, sources.users) if paths]
    ids = con.sql(" UNION ".join(selects)).to_arrow_table().column(0) if selects else \
        pa.chunked_array([], pa.string())
    ids = ids.filter(ids.is_valid()).combine_chunks() if len(ids) else pa.array([], pa.string())
    parts = partition_of(ids.to_numpy(zero_copy_only=False), partitions)
    path = folder / USER_PARTS_FILE
    tmp = folder / f".{USER_PARTS_FILE}.tmp"
    pq.write_table(pa.table({"user_id": ids.cast(pa.string()), "part": pa.array(parts)}), tmp)
    os.replace(tmp, path)
    return path


def build_user_part(plan_file: str, part: int) -> dict[str, int]:
    """Phase 1 for one user part: its user views and item partials, as parquet files.

    Args:
        plan_file: the build's plan (`write_plan`); the part's files go beside it.
        part: the part number (0 .. partitions - 1).

    Returns:
        Rows written per file (view or partial name -> rows).
    """
    plan = json.loads(Path(plan_file).read_text())
    folder = Path(plan_file).parent
    sources = SourceSet.from_dict(plan["sources"])
    partitions = int(plan["partitions"])
    cutoff = datetime.fromisoformat(plan["cutoff"]) if plan["cutoff"] else None
    # a rerun (a retried task) writes beside a crashed or concurrent attempt, then replaces
    tmp = folder / f".part={part}.{uuid.uuid4().hex[:8]}.tmp"
    tmp.mkdir(parents=True)
    rows: dict[str, int] = {}
    con = connect(threads=plan["threads"], memory_limit=part_memory_limit(plan["memory_limit"]))
    # spill to this machine's temp folder, one per part: not into the worker's working
    # directory (DuckDB's default), which a container may not let it write
    spill = Path(tempfile.mkdtemp(prefix=f"recsys-part{part}-spill-"))
    try:
        con.execute(f"SET temp_directory = {lit(spill)}")
        part_users = None
        if partitions > 1:
            con.execute("CREATE TEMP TABLE part_users AS SELECT user_id FROM read_parquet("
                        f"{lit(folder / USER_PARTS_FILE)}, {NO_HIVE}) WHERE part = {int(part)}")
            part_users = "part_users"
        register_relations(con, sources, cutoff, part_users=part_users,
                           materialize=partitions > 1)
        register_params(con, datetime.fromisoformat(plan["as_of"]), plan["params"])
        for view in REGISTRY.values():
            if view.per_user_part:
                rows[view.name] = write_ordered(con, view.sql, tmp / f"{view.name}.parquet")
        for name in PARTIALS:
            written = con.execute(f"COPY ({partial_sql(name)}) TO "
                                  f"{lit(tmp / (name + '.parquet'))} {PARQUET}").fetchone()
            rows[name] = int(written[0]) if written else 0
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    finally:
        con.close()
        shutil.rmtree(spill, ignore_errors=True)
    final = part_folder(folder, part)
    # move an earlier attempt's folder aside first, so the rename below never meets a
    # non-empty target; a concurrent attempt that wins the race wrote the same files
    stale = folder / f".part={part}.{uuid.uuid4().hex[:8]}.old"
    with contextlib.suppress(FileNotFoundError):
        os.replace(final, stale)
    shutil.rmtree(stale, ignore_errors=True)
    try:
        os.replace(tmp, final)
    except OSError as error:
        if error.errno not in (errno.ENOTEMPTY, errno.EEXIST):
            raise
        shutil.rmtree(tmp, ignore_errors=True)
    log.info("feature part %d/%d: %s", part, partitions, rows)
    return rows


def merge_view(con: duckdb.DuckDBPyConnection, view: FeatureView, folder: Path,
               partitions: int, out_file: Path) -> int:
    """Phase 2 for one view: write it to `out_file` from the parts' files; rows written.

    `con` holds the whole build's `raw_items` and `build_params` (`register_relations`,
    `register_params`). A user view of a one-part build is that part's file, moved.
    """
    parts = [part_folder(folder, p) for p in range(partitions)]
    if view.per_user_part:
        files = [p / f"{view.name}.parquet" for p in parts]
        if partitions == 1:
            os.replace(files[0], out_file)
            meta = pq.read_metadata(out_file)
            return int(meta.num_rows)
        return write_ordered(con, f"SELECT * FROM read_parquet({listing(files)}, {NO_HIVE}) "
                                  f"ORDER BY {', '.join(view.keys)}", out_file)
    for name in view.partials:
        con.execute(f"CREATE OR REPLACE VIEW {name} AS SELECT * FROM read_parquet("
                    f"{listing([p / (name + '.parquet') for p in parts])}, {NO_HIVE})")
    written = con.execute(f"COPY ({view.sql}) TO {lit(out_file)} {PARQUET}").fetchone()
    return int(written[0]) if written else 0


def write_ordered(con: duckdb.DuckDBPyConnection, sql: str, out_file: Path) -> int:
    """Write the rows of an ordered query to parquet through a temporary table; rows written.

    DuckDB's parquet writer encodes the same rows in slightly different bytes depending on
    how they reach it (a sort over several files, an aggregate's output); from a table they
    always reach it the same way, so a user view is byte-identical for any number of parts.
    """
    con.execute(f"CREATE OR REPLACE TEMP TABLE ordered_rows AS {sql}")
    try:
        written = con.execute(f"COPY (SELECT * FROM ordered_rows) TO {lit(out_file)} {PARQUET}"
                              ).fetchone()
    finally:
        con.execute("DROP TABLE ordered_rows")
    return int(written[0]) if written else 0
