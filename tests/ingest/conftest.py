"""Small batches written to tmp_path; each test breaks one thing."""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from ingest.raw_store import StoredBatch, store_files
from recsys.settings import Settings

USERS_CSV = "user_id,age,gender,occupation,zip\n007,24,M,technician,85711\n008,53,F,other,94043\n009,23,M,writer,32067\n"
ITEMS_CSV = (
    "item_id,title,genres\n"
    "1,Toy Story (1995),Animation|Children's|Comedy\n"
    "2,GoldenEye (1995),Action|Adventure|Thriller\n"
    "3,Four Rooms (1995),\n"
)
INTERACTIONS_CSV = (
    "user_id,item_id,timestamp,rating\n"
    "007,1,881250949,5\n"
    "007,2,2024-01-01T10:00:00+02:00,3\n"
    "008,1,2024-01-02 08:30:00,4\n"
    "009,3,1700000000.5,1\n"
)


def write_batch(root: Path, **overrides: str | bytes | None) -> Path:
    """Write a valid CSV batch under `root`; ``name="text"`` replaces ``name.csv``,
    ``name=None`` drops it, and a key with a dot (``"users.parquet"``) is written as is."""
    files: dict[str, str | bytes | None] = {
        "users.csv": USERS_CSV,
        "items.csv": ITEMS_CSV,
        "interactions.csv": INTERACTIONS_CSV,
    }
    for key, value in overrides.items():
        files[key if "." in key else f"{key}.csv"] = value
    root.mkdir(parents=True, exist_ok=True)
    for name, content in files.items():
        if content is None:
            continue
        path = root / name
        if isinstance(content, bytes):
            path.write_bytes(content)
        else:
            path.write_text(content, encoding="utf-8")
    return root


@pytest.fixture
def batch_dir(tmp_path: Path) -> Path:
    return write_batch(tmp_path / "batch")


@pytest.fixture(scope="session")
def expectations_dir() -> Path:
    return Settings().expectations_dir


BOOKKEEPING = ("_batch_id", "_effective_ts", "_seq")


def stored_table(settings: Settings, stored: StoredBatch, dataset: str) -> pa.Table:
    """One dataset of a batch as the raw store holds it, without the store's bookkeeping
    columns (interactions: every date partition, in date order)."""
    tables = [pq.read_table(path) for path in store_files(settings.store_dir, dataset,
                                                          batches=[stored])]
    table = pa.concat_tables(tables) if tables else pa.table({})
    return table.drop_columns([c for c in BOOKKEEPING if c in table.column_names])


def store_contents(settings: Settings) -> list[str]:
    """Every path under the raw store (relative), to check what a run left there."""
    root = settings.store_dir
    return sorted(str(p.relative_to(root)) for p in root.rglob("*")) if root.exists() else []
