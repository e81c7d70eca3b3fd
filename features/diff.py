"""What changed between two feature snapshots, computed in DuckDB (no pandas)."""

from __future__ import annotations

from typing import Any

from ingest.raw_store import connect
from features.snapshot import Manifest

_NUMERIC = ("TINYINT", "SMALLINT", "INTEGER", "BIGINT", "HUGEINT", "FLOAT", "DOUBLE", "DECIMAL")


def _lit(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


def diff_snapshots(a: Manifest, b: Manifest) -> dict[str, Any]:
    """Per view: versions, row counts, schema changes, keys added/removed, numeric column means.

    Returns:
        `{"a": id, "b": id, "views": {view: {...}}}`; a view present in one snapshot only has
        `{"only_in": id}`.
    """
    report: dict[str, Any] = {"a": a.snapshot_id, "b": b.snapshot_id, "views": {}}
    con = connect()
    try:
        for name in [*a.views, *(n for n in b.views if n not in a.views)]:
            if name not in a.views or name not in b.views:
                report["views"][name] = {"only_in": a.snapshot_id if name in a.views
                                         else b.snapshot_id}
                continue
            va, vb = a.views[name], b.views[name]
            types_a = {c["name"]: c["type"] for c in va.schema}
            types_b = {c["name"]: c["type"] for c in vb.schema}
            changes = [f"+ {c} {t}" for c, t in types_b.items() if c not in types_a]
            changes += [f"- {c} {t}" for c, t in types_a.items() if c not in types_b]
            changes += [f"~ {c} {types_a[c]} -> {types_b[c]}" for c in types_a
                        if c in types_b and types_a[c] != types_b[c]]
            keys = [k for k in (va.keys or vb.keys) if k in types_a and k in types_b]
            fa = f"read_parquet({_lit(va.path)}, hive_partitioning = false)"
            fb = f"read_parquet({_lit(vb.path)}, hive_partitioning = false)"
            key_list = ", ".join(f'"{k}"' for k in keys)
            added = removed = common = 0
            if keys:
                row = con.execute(
                    f"SELECT COUNT(*) FILTER (WHERE a_in AND b_in), "
                    f"COUNT(*) FILTER (WHERE b_in AND NOT a_in), "
                    f"COUNT(*) FILTER (WHERE a_in AND NOT b_in) FROM ("
                    f"SELECT {key_list}, bool_or(src = 'a') AS a_in, bool_or(src = 'b') AS b_in "
                    f"FROM (SELECT {key_list}, 'a' AS src FROM {fa} UNION ALL "
                    f"SELECT {key_list}, 'b' AS src FROM {fb}) GROUP BY {key_list})").fetchone()
                common, added, removed = (int(x) for x in row) if row else (0, 0, 0)
            numeric = [c for c in types_a if c in types_b and c not in keys
                       and types_a[c].split("(")[0] in _NUMERIC
                       and types_b[c].split("(")[0] in _NUMERIC]
            means: dict[str, dict[str, float | None]] = {}
            if numeric:
                select = ", ".join(f'AVG("{c}")' for c in numeric)
                row_a = con.execute(f"SELECT {select} FROM {fa}").fetchone() or ()
                row_b = con.execute(f"SELECT {select} FROM {fb}").fetchone() or ()
                means = {c: {"a": _round(x), "b": _round(y)}
                         for c, x, y in zip(numeric, row_a, row_b, strict=True)}
            report["views"][name] = {
                "version_a": va.version, "version_b": vb.version, "rows_a": va.rows,
                "rows_b": vb.rows, "schema_changes": changes, "keys_added": added,
                "keys_removed": removed, "keys_common": common, "means": means,
            }
    finally:
        con.close()
    return report


def _round(value: Any) -> float | None:
    return None if value is None else round(float(value), 6)
