"""Stage `features`: every view over the raw store, beside the views' SQL through bare DuckDB."""

from __future__ import annotations

import shutil
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import duckdb

from bench.workspace import RUN_ID, Size, bench_settings, phase_main, read_output
from features.registry import DEFAULT_PARAMS, PARTIALS, REGISTRY, partial_sql
from features.stage import build_features_as_of


def _lit(value: Path | str) -> str:
    return "'" + str(value).replace("'", "''") + "'"


def _ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _listing(paths: Sequence[Path]) -> str:
    return "[" + ", ".join(_lit(p) for p in paths) + "]"


def bare_view_copy(files: dict[str, Sequence[Path]], out: Path, *, threads: int | None = None,
                   memory_limit: str | None = None) -> None:
    """Every registered view's SQL through plain DuckDB `COPY ... TO parquet` into `out`.

    The same relations the feature store registers (`raw_<dataset>`, `item_genres`,
    `build_params` with the default parameters, the item views' partial aggregates over the
    whole batch as one part) over one batch's validated files, without the store's as-of rules,
    user partitions, manifest, hashing, schema checks or atomic renames: the raw baseline of the
    feature build.

    Args:
        files: "users", "items", "interactions" -> that batch's parquet files.
        out: the folder the views are written to.
        threads, memory_limit: DuckDB resource limits (defaults: DuckDB's).
    """
    con = duckdb.connect()
    try:
        con.execute("SET TimeZone = 'UTC'")
        if threads is not None:
            con.execute(f"SET threads = {int(threads)}")
        if memory_limit is not None:
            con.execute(f"SET memory_limit = {_lit(memory_limit)}")
        for name, paths in files.items():
            relation = (f"read_parquet({_listing(paths)}, union_by_name = true, "
                        "hive_partitioning = false)")
            # the raw store's bookkeeping columns (`_batch_id`, ...) are not the batch's data
            columns = [row[0] for row in con.execute(f"DESCRIBE SELECT * FROM {relation}")
                       .fetchall() if not row[0].startswith("_")]
            con.execute(f"CREATE VIEW raw_{name} AS SELECT "
                        f"{', '.join(_ident(c) for c in columns)} FROM {relation}")
        con.execute("CREATE VIEW item_genres AS SELECT item_id, UNNEST(genres) AS genre "
                    "FROM raw_items")
        con.execute("CREATE TABLE build_params AS SELECT MAX(\"timestamp\") AS as_of, "
                    f"{DEFAULT_PARAMS['half_life_days']}::DOUBLE AS half_life_days, "
                    f"{DEFAULT_PARAMS['recent_days']}::INTEGER AS recent_days, "
                    f"{DEFAULT_PARAMS['top_genres']}::INTEGER AS top_genres "
                    "FROM raw_interactions")
        # The item views merge per-part aggregates (`features.parts`); bare, there is one part,
        # the whole batch, and its aggregate is a plain view that DuckDB inlines.
        for name in PARTIALS:
            con.execute(f"CREATE VIEW {_ident(name)} AS {partial_sql(name)}")
        for view in REGISTRY.values():
            con.execute(f"COPY ({view.sql}) TO {_lit(out / (view.name + '.parquet'))} "
                        "(FORMAT parquet, COMPRESSION zstd)")
    finally:
        con.close()


def baseline(work: Path, size: Size, uri: str) -> dict[str, Any]:
    """The views' SQL through bare DuckDB over the batch's files in the raw store."""
    files = {name: [Path(p) for p in paths]
             for name, paths in read_output(work, "stored_files").items()}
    out = work / "bare_features"
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    started = time.perf_counter()
    bare_view_copy(files, out)
    return {"seconds": time.perf_counter() - started}


def ours(work: Path, size: Size, uri: str) -> dict[str, Any]:
    """The pipeline's build-features task: every view over the raw store, with its manifest."""
    settings = bench_settings(work, uri)
    shutil.rmtree(settings.features_dir, ignore_errors=True)  # the work folder's, from a rerun
    started = time.perf_counter()
    manifest = build_features_as_of(None, snapshot_id=RUN_ID, settings=settings)
    return {"seconds": time.perf_counter() - started,
            "rows": {n: v.rows for n, v in manifest.views.items()}}


PHASES = {"baseline": baseline, "ours": ours}

if __name__ == "__main__":
    phase_main(PHASES)
