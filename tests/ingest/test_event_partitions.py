"""The raw store's interaction partitions: one sorted file per UTC date, and the marker's
`repeated_events` counted in the same pass, exact with and without repeats, when copies fall
into different stream batches, and when the sort key collides."""

from datetime import UTC, datetime, timedelta
from pathlib import Path

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import ingest.event_partitions as event_partitions
from ingest.raw_store import commit_batch, store_files
from tests.features.conftest import INTERACTION_SCHEMA, write_raw_batch

T0 = datetime(2024, 3, 1, 23, 59, 58, tzinfo=UTC)


def _events(rows: list[tuple[str, str, int, str | None]]) -> dict[str, list]:
    return {"user_id": [r[0] for r in rows], "item_id": [r[1] for r in rows],
            "timestamp": [T0 + timedelta(seconds=r[2]) for r in rows],
            "rating": [1.0] * len(rows), "event_type": [r[3] for r in rows]}


def _commit(tmp_path: Path, rows: list[tuple[str, str, int, str | None]], *,
            drop_event_type: bool = False):
    files = write_raw_batch(tmp_path / "raw", users={"user_id": ["u1", "u2"]},
                            items={"item_id": ["i1", "i2"], "title": ["a", "b"]},
                            interactions=_events(rows))
    if drop_event_type:
        table = pq.read_table(files["interactions"]).drop_columns(["event_type"])
        pq.write_table(table, files["interactions"])
    return commit_batch(files, raw_root=tmp_path / "store")


def _distinct_repeats(rows: list[tuple[str, str, int, str | None]]) -> int:
    """The definition: rows minus distinct (user, item, timestamp, event type), nulls equal."""
    return len(rows) - len(set(rows))


# Copies adjacent and apart in input order, a null event type equal to itself and different
# from a named one, the same pair at another second, across midnight (two partitions).
ROWS = [("u1", "i1", 0, "view"), ("u2", "i1", 0, "view"), ("u1", "i1", 0, "view"),
        ("u1", "i1", 0, None), ("u1", "i1", 0, None), ("u1", "i1", 1, "view"),
        ("u2", "i2", 3, "like"), ("u1", "i1", 0, "view"), ("u2", "i2", 3, "like"),
        ("u2", "i2", 4, "like")]


@pytest.mark.parametrize("stream_rows", [1_000_000, 1, 3])
def test_repeated_events_are_exact(tmp_path, monkeypatch, stream_rows):
    monkeypatch.setattr(event_partitions, "_STREAM_ROWS", stream_rows)
    stored = _commit(tmp_path, ROWS)
    assert stored.repeated_events == _distinct_repeats(ROWS) == 4
    assert stored.rows["interactions"] == len(ROWS)
    assert stored.dates == ["2024-03-01", "2024-03-02"]


def test_no_repeats_counts_zero(tmp_path):
    rows = [("u1", "i1", 0, "view"), ("u1", "i1", 0, "like"), ("u1", "i2", 0, "view"),
            ("u2", "i1", 0, "view"), ("u1", "i1", 1, "view"), ("u1", "i1", 2, None)]
    assert _commit(tmp_path, rows).repeated_events == 0


def test_without_an_event_type_column_the_other_three_columns_decide(tmp_path):
    rows = [("u1", "i1", 0, "view"), ("u1", "i1", 0, "like"), ("u1", "i1", 1, "view")]
    assert _commit(tmp_path, rows, drop_event_type=True).repeated_events == 1


@pytest.mark.parametrize("rows, expected", [
    (ROWS, 4),
    ([("u1", "i1", 0, "view"), ("u2", "i1", 0, "view"), ("u1", "i1", 0, "view")], 1),
    ([("u1", "i1", 0, "view"), ("u2", "i1", 0, "view")], 0),
])
def test_a_colliding_sort_key_falls_back_to_an_exact_count(tmp_path, monkeypatch, rows,
                                                           expected):
    """Every event of a second shares the key: copies may not be adjacent, and the pass must
    notice and count with DISTINCT instead of trusting neighbours."""
    monkeypatch.setattr(event_partitions, "_KEY_SQL", "hash(0)")
    assert _commit(tmp_path, rows).repeated_events == _distinct_repeats(rows) == expected


def test_partitions_hold_every_row_sorted_by_time_in_the_fixed_schema(tmp_path):
    stored = _commit(tmp_path, list(reversed(ROWS)))
    paths = store_files(tmp_path / "store", "interactions")
    assert [p.parent.name for p in paths] == ["date=2024-03-01", "date=2024-03-02"]
    for path in paths:
        table = pq.read_table(path)
        assert table.schema == INTERACTION_SCHEMA
        stamps = table.column("timestamp").cast(pa.int64()).to_pylist()
        assert stamps == sorted(stamps)
    listing = "[" + ", ".join(f"'{p}'" for p in paths) + "]"
    with duckdb.connect() as con:
        con.execute("SET TimeZone = 'UTC'")
        stored_rows = sorted(con.execute(
            "SELECT user_id, item_id, epoch(\"timestamp\")::BIGINT, event_type FROM "
            f"read_parquet({listing}, hive_partitioning = false)").fetchall(),
            key=repr)
    expected = sorted(((u, i, int((T0 + timedelta(seconds=s)).timestamp()), e)
                       for u, i, s, e in ROWS), key=repr)
    assert stored_rows == expected
    assert stored.rows["interactions"] == len(ROWS)


@pytest.mark.parametrize("unit", ["us", "ns"])
def test_dates_follow_the_instant_in_any_unit_and_before_1970(tmp_path, unit):
    files = write_raw_batch(tmp_path / "raw", users={"user_id": ["u1"]},
                            items={"item_id": ["i1"], "title": ["a"]},
                            interactions=_events([("u1", "i1", 0, "view")]))
    instants = [datetime(1969, 12, 31, 23, 59, 59, tzinfo=UTC), T0,
                T0 + timedelta(microseconds=1)]
    table = pa.table({"user_id": ["u1", "u1", "u1"], "item_id": ["i1", "i1", "i1"],
                      "timestamp": pa.array(instants, pa.timestamp(unit, tz="UTC")),
                      "rating": [1.0, 1.0, 1.0], "event_type": ["view", "view", "view"]})
    pq.write_table(table, files["interactions"])
    stored = commit_batch(files, raw_root=tmp_path / "store")
    assert stored.dates == ["1969-12-31", "2024-03-01"]
    assert stored.repeated_events == 0  # a microsecond apart: two events


def test_a_null_timestamp_is_refused_naming_file_column_and_rule(tmp_path):
    files = write_raw_batch(tmp_path / "raw", users={"user_id": ["u1"]},
                            items={"item_id": ["i1"], "title": ["a"]},
                            interactions=_events([("u1", "i1", 0, "view")]))
    table = pq.read_table(files["interactions"])
    nulls = pa.nulls(1, table.schema.field("timestamp").type)
    pq.write_table(table.set_column(table.schema.get_field_index("timestamp"), "timestamp",
                                    nulls), files["interactions"])
    with pytest.raises(ValueError, match=r"interactions.*'timestamp' has 1 null value.*"
                                         r"normalized interactions"):
        commit_batch(files, raw_root=tmp_path / "store")
    assert store_files(tmp_path / "store", "interactions") == []
