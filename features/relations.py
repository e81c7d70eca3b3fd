"""The relations a feature build registers in DuckDB for the views' SQL to read.

* `interaction_rows` -- every visible interaction row (`timestamp <= as_of`) with its batch's
  ingestion order; `raw_interactions` -- one row per event identity, the latest batch's values
  (`features.snapshot`, "Event identity");
* `raw_users`, `raw_items` -- one row per entity (latest wins over the raw store's batches);
  `raw_items` always has `genres` (list) and `release_year`; `item_genres` -- `(item_id, genre)`;
* `build_params` -- one row: `as_of`, `half_life_days`, `recent_days`, `top_genres`.

A user part (`features.parts`) registers the same relations restricted to its users: the
events and user rows of the users in `part_users` (a table of user ids); items stay whole.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import duckdb

from features.sources import SourceSet
from recsys.errors import FeatureStoreError

BOOKKEEPING = ("_batch_id", "_effective_ts", "_seq")


def lit(value: Path | str) -> str:
    """A SQL string literal."""
    return "'" + str(value).replace("'", "''") + "'"


def listing(paths: list[Path]) -> str:
    """A SQL list of path literals."""
    return "[" + ", ".join(lit(p) for p in paths) + "]"


def register_relations(con: duckdb.DuckDBPyConnection, sources: SourceSet,
                       cutoff: datetime | None, *, part_users: str | None = None,
                       materialize: bool = False) -> None:
    """Register `interaction_rows`, `raw_interactions`, `raw_users`, `raw_items`,
    `item_genres` over `sources`, events cut at `cutoff`.

    Args:
        con: the build's connection.
        sources: the input files.
        cutoff: events after it are invisible (None: all).
        part_users: name of a relation with a `user_id` column: only those users' events and
            user rows are registered (a user part); None: every user.
        materialize: keep `raw_interactions` as a table (one scan of the files, then the
            views read memory; worth it for a part, which otherwise filters every scan).
    """
    user_filter = (f"user_id IN (SELECT user_id FROM {part_users})" if part_users else None)
    _register_interactions(con, sources, cutoff, user_filter,
                           "TEMP TABLE" if materialize else "VIEW")
    for table, key, paths, where in (("users", "user_id", sources.users, user_filter),
                                     ("items", "item_id", sources.items, None)):
        relation = f"read_parquet({listing(paths)}, union_by_name = true)"
        if sources.latest_wins:
            visible = [f"_effective_ts <= {lit(cutoff.isoformat())}::TIMESTAMPTZ"] if cutoff else []
            conditions = " AND ".join([*visible, *([where] if where else [])])
            relation = (f"(SELECT * EXCLUDE ({', '.join(BOOKKEEPING)}) FROM {relation}"
                        f"{' WHERE ' + conditions if conditions else ''} "
                        f"QUALIFY ROW_NUMBER() OVER (PARTITION BY {key} "
                        "ORDER BY _effective_ts DESC, _seq DESC) = 1)")
        elif where:
            relation = f"(SELECT * FROM {relation} WHERE {where})"
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
        # items are small and read by two views (genres, item features): keep them once
        kind = "TEMP TABLE" if table == "items" else "VIEW"
        con.execute(f"CREATE {kind} raw_{table} AS SELECT {select} FROM {relation}")
    con.execute("CREATE VIEW item_genres AS SELECT item_id, UNNEST(genres) AS genre "
                "FROM raw_items WHERE genres IS NOT NULL")


def _register_interactions(con: duckdb.DuckDBPyConnection, sources: SourceSet,
                           cutoff: datetime | None, user_filter: str | None, kind: str
                           ) -> None:
    """`interaction_rows` (every visible row, with its batch's ingestion order) and
    `raw_interactions` (one row per event identity, the latest batch's values). When the
    sources guarantee distinct events (`SourceSet.events_distinct`) the grouping is skipped:
    the rows are the events."""
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
        conditions = ([f"\"timestamp\" <= {lit(cutoff.isoformat())}::TIMESTAMPTZ"] if cutoff
                      else []) + ([user_filter] if user_filter else [])
        where = f" WHERE {' AND '.join(conditions)}" if conditions else ""
        scan = (f"read_parquet({listing(sources.interactions)}, union_by_name = true, "
                "hive_partitioning = false")
        if sources.batch_order and not sources.events_distinct:
            con.execute("CREATE TEMP TABLE interaction_files (_file VARCHAR, batch_order BIGINT)")
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
        con.execute(f"CREATE {kind} raw_interactions AS SELECT * EXCLUDE (batch_order) "
                    "FROM interaction_rows")
        return
    # One grouped aggregate (cheaper than a window): the winner's values come from the
    # greatest (batch order, rating, weight), so tied rows give the same values.
    con.execute(
        f"CREATE {kind} raw_interactions AS SELECT user_id, item_id, \"timestamp\", "
        "arg_max_null(rating, winner) AS rating, arg_max_null(weight, winner) AS weight, "
        "event_type FROM (SELECT *, {'batch': batch_order, 'rating': rating, "
        "'weight': weight} AS winner FROM interaction_rows) "
        "GROUP BY user_id, item_id, \"timestamp\", event_type")


def resolve_as_of(con: duckdb.DuckDBPyConnection, sources: SourceSet,
                  cutoff: datetime | None) -> datetime:
    """The snapshot's as-of: the cut-off, else the latest visible event (from the sources'
    markers when they know it, else one scan of `interaction_rows`), else the epoch."""
    if cutoff is not None:
        return cutoff
    if sources.latest_event is not None:
        return datetime.fromisoformat(sources.latest_event).astimezone(UTC)
    row = con.execute("SELECT MAX(\"timestamp\") FROM interaction_rows").fetchone()
    latest = row[0] if row else None
    return latest.astimezone(UTC) if latest is not None else datetime(1970, 1, 1, tzinfo=UTC)


def register_params(con: duckdb.DuckDBPyConnection, as_of: datetime,
                    values: dict[str, Any]) -> None:
    """The one-row `build_params` relation."""
    con.execute(
        "CREATE TEMP TABLE build_params AS SELECT "
        f"{lit(as_of.isoformat())}::TIMESTAMPTZ AS as_of, "
        f"CAST({float(values['half_life_days'])} AS DOUBLE) AS half_life_days, "
        f"CAST({int(values['recent_days'])} AS INTEGER) AS recent_days, "
        f"CAST({int(values['top_genres'])} AS INTEGER) AS top_genres")
