from __future__ import annotations

from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from ingest.normalize import normalize_batch, parse_timestamps
from ingest.reader import read_batch
from ingest.writer import write_batch_parquet

from .conftest import write_batch


def test_timestamps_unix_and_iso_become_utc(batch_dir: Path) -> None:
    batch = normalize_batch(read_batch(batch_dir))
    ts = batch.interactions["timestamp"]

    assert str(ts.dtype) == "datetime64[us, UTC]"
    assert ts.tolist() == [
        pd.Timestamp("1997-12-04 15:55:49", tz="UTC"),  # unix seconds
        pd.Timestamp("2024-01-01 08:00:00", tz="UTC"),  # ISO with +02:00 offset
        pd.Timestamp("2024-01-02 08:30:00", tz="UTC"),  # naive ISO -> UTC
        pd.Timestamp("2023-11-14 22:13:20.5", tz="UTC"),  # float seconds
    ]


def test_parse_timestamps_numeric_datetime_and_bad_values() -> None:
    assert parse_timestamps(pd.Series([0, 86400])).tolist() == [
        pd.Timestamp("1970-01-01", tz="UTC"), pd.Timestamp("1970-01-02", tz="UTC")]
    naive = pd.Series(pd.to_datetime(["2024-05-01 12:00"]))
    assert parse_timestamps(naive).iloc[0] == pd.Timestamp("2024-05-01 12:00", tz="UTC")
    aware = pd.Series(pd.to_datetime(["2024-05-01 12:00"])).dt.tz_localize("Europe/Paris")
    assert parse_timestamps(aware).iloc[0] == pd.Timestamp("2024-05-01 10:00", tz="UTC")
    parsed = parse_timestamps(pd.Series(["2024-01-01T00:00Z", "yesterday", None, "1e30"], dtype=object))
    assert parsed.iloc[0] == pd.Timestamp("2024-01-01", tz="UTC")
    assert parsed.iloc[1:].isna().all()


def test_genres_split_and_optional_columns_added(batch_dir: Path) -> None:
    batch = normalize_batch(read_batch(batch_dir))

    assert batch.items["genres"].tolist() == [
        ["Animation", "Children's", "Comedy"], ["Action", "Adventure", "Thriller"], []]
    inter = batch.interactions
    assert inter["rating"].dtype == "float64"
    assert inter["weight"].dtype == "float64" and inter["weight"].isna().all()
    assert "event_type" in inter.columns and inter["event_type"].isna().all()


def test_parquet_genres_lists_and_event_type(tmp_path: Path) -> None:
    root = write_batch(tmp_path / "b", items=None,
                       interactions="user_id,item_id,timestamp,weight,event_type\n"
                                    "007,1,881250949,2,click\n")
    pq.write_table(pa.table({"item_id": ["1"], "title": ["a"], "genres": [["x", "y"]]}),
                   root / "items.parquet")
    batch = normalize_batch(read_batch(root))
    assert batch.items["genres"].tolist() == [["x", "y"]]
    assert batch.interactions["weight"].tolist() == [2.0]
    assert batch.interactions["event_type"].tolist() == ["click"]
    assert batch.interactions["rating"].isna().all()


def test_write_batch_parquet_schema(batch_dir: Path, tmp_path: Path) -> None:
    batch = normalize_batch(read_batch(batch_dir))
    paths = write_batch_parquet(batch, tmp_path / "out")

    assert set(paths) == {"users", "items", "interactions"}
    schema = pq.read_schema(paths["interactions"])
    assert schema.names[:6] == ["user_id", "item_id", "timestamp", "rating", "weight",
                                "event_type"]
    assert schema.field("user_id").type == pa.string()
    assert schema.field("item_id").type == pa.string()
    assert schema.field("timestamp").type == pa.timestamp("us", tz="UTC")
    assert schema.field("rating").type == pa.float64()
    assert schema.field("weight").type == pa.float64()
    assert schema.field("event_type").type == pa.string()
    items = pq.read_table(paths["items"])
    assert items.schema.field("genres").type == pa.list_(pa.string())
    assert items.column("genres").to_pylist()[0] == ["Animation", "Children's", "Comedy"]
    users = pq.read_table(paths["users"])
    assert users.column("user_id").to_pylist() == ["007", "008", "009"]
    ts = pq.read_table(paths["interactions"]).column("timestamp").to_pylist()
    assert ts[0].isoformat() == "1997-12-04T15:55:49+00:00"
