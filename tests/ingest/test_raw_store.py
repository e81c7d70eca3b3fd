"""The raw store: commits idempotent by content, date partitions, known ids, crash leftovers,
and the run's staging folder."""

from datetime import UTC, datetime
from pathlib import Path

import duckdb
import pytest

from ingest.raw_store import (
    commit_batch,
    known_ids,
    list_batches,
    staged_batch,
    store_files,
)
from recsys.errors import InvalidId
from tests.features.conftest import random_batch, write_raw_batch

JAN = datetime(2024, 1, 1, tzinfo=UTC)
FEB = datetime(2024, 2, 1, tzinfo=UTC)
MAR = datetime(2024, 3, 1, tzinfo=UTC)


@pytest.fixture
def make_batch(tmp_path):
    """`make_batch(name, **random_batch kwargs)` -> normalized files under tmp_path/raw/name."""

    def factory(name: str, **kwargs) -> dict[str, Path]:
        return random_batch(tmp_path / "raw" / name, **kwargs)

    return factory


def _count(paths: list[Path]) -> int:
    listing = "[" + ", ".join(f"'{p}'" for p in paths) + "]"
    return duckdb.execute(f"SELECT COUNT(*) FROM read_parquet({listing})").fetchone()[0]


def test_reingesting_the_same_batch_is_a_noop(make_batch, tmp_path):
    raw = make_batch("b1", seed=1, n=200, start=JAN, end=FEB)
    store = tmp_path / "store"
    first = commit_batch(raw, raw_root=store)
    files_before = sorted(p.relative_to(store) for p in store.rglob("*.parquet"))
    mtimes = {p: p.stat().st_mtime_ns for p in store.rglob("*.parquet")}

    again = commit_batch(raw, raw_root=store)
    assert again.skipped and not first.skipped
    assert again.batch_id == first.batch_id and again.seq == first.seq == 1
    assert sorted(p.relative_to(store) for p in store.rglob("*.parquet")) == files_before
    assert {p: p.stat().st_mtime_ns for p in store.rglob("*.parquet")} == mtimes
    assert len(list_batches(store)) == 1
    assert _count(store_files(store, "interactions")) == 200


def test_same_content_from_another_run_dir_is_the_same_batch(make_batch, tmp_path):
    a = make_batch("run-a", seed=7, n=50, start=JAN, end=FEB)
    b = make_batch("run-b", seed=7, n=50, start=JAN, end=FEB)
    store = tmp_path / "store"
    assert commit_batch(a, raw_root=store).batch_id == \
        commit_batch(b, raw_root=store).batch_id
    assert len(list_batches(store)) == 1


def test_two_batches_append_by_date(make_batch, tmp_path):
    store = tmp_path / "store"
    jan = commit_batch(make_batch("jan", seed=1, n=300, start=JAN, end=FEB), raw_root=store)
    feb = commit_batch(make_batch("feb", seed=2, n=100, start=FEB, end=MAR), raw_root=store)
    assert (jan.seq, feb.seq) == (1, 2) and jan.batch_id != feb.batch_id
    assert all(d.startswith("2024-01") for d in jan.dates)
    assert all(d.startswith("2024-02") for d in feb.dates)
    files = store_files(store, "interactions")
    assert _count(files) == 400
    for path in files:  # Hive layout: interactions/date=YYYY-MM-DD/batch=<id>.parquet
        assert path.parent.name.startswith("date=") and path.name.startswith("batch=")
        day = path.parent.name.removeprefix("date=")
        rows = duckdb.execute(f"SELECT COUNT(*) FROM read_parquet('{path}') "
                          f"WHERE CAST(timezone('UTC', \"timestamp\") AS DATE) <> DATE '{day}'"
                          ).fetchone()[0]
        assert rows == 0, f"{path} holds events of another day"
    # partition pruning: only January files are listed for an as-of in January
    pruned = store_files(store, "interactions", until=datetime(2024, 1, 15).date())
    assert pruned and all(p.parent.name <= "date=2024-01-15" for p in pruned)


def test_known_ids(tmp_path):
    store = tmp_path / "store"
    assert known_ids(store, "users") == set()
    write = write_raw_batch
    b1 = write(tmp_path / "b1", users={"user_id": ["a", "b"]},
               items={"item_id": ["x"], "title": ["X"]},
               interactions={"user_id": ["a"], "item_id": ["x"], "timestamp": [JAN]})
    b2 = write(tmp_path / "b2", users={"user_id": ["c"]},
               items={"item_id": ["y"], "title": ["Y"]},
               interactions={"user_id": ["c"], "item_id": ["y"], "timestamp": [FEB]})
    commit_batch(b1, raw_root=store)
    commit_batch(b2, raw_root=store)
    assert known_ids(store, "users") == {"a", "b", "c"}
    assert known_ids(store, "items") == {"x", "y"}
    with pytest.raises(ValueError, match="unknown dataset"):
        known_ids(store, "interactions")


def test_crashed_ingestion_leftovers_are_replaced(make_batch, tmp_path):
    raw = make_batch("b", seed=3, n=40, start=JAN, end=FEB)
    store = tmp_path / "store"
    summary = commit_batch(raw, raw_root=store)
    # simulate a crash after files were moved but before the marker was written
    (store / "batches" / f"{summary.batch_id}.json").unlink()
    assert list_batches(store) == [] and store_files(store, "interactions") == []
    again = commit_batch(raw, raw_root=store)
    assert not again.skipped
    assert _count(store_files(store, "interactions")) == 40


def test_a_failed_commit_leaves_nothing(make_batch, tmp_path, monkeypatch):
    import ingest.raw_store as raw_store

    raw = make_batch("b", seed=4, n=40, start=JAN, end=FEB)
    store = tmp_path / "store"
    real_replace = raw_store.os.replace

    def failing_replace(src, dst):
        if str(dst).endswith(".json"):  # the marker: everything else has been moved in
            raise OSError("disk full")
        real_replace(src, dst)

    monkeypatch.setattr(raw_store.os, "replace", failing_replace)
    with pytest.raises(OSError, match="disk full"):
        commit_batch(raw, raw_root=store)
    assert sorted(p.name for p in store.rglob("*") if p.is_file()) == [".lock"]
    monkeypatch.undo()
    assert not commit_batch(raw, raw_root=store).skipped
    assert _count(store_files(store, "interactions")) == 40


def test_staged_batch_folder_is_removed_whatever_happens(make_batch, tmp_path):
    store = tmp_path / "store"
    with staged_batch(store, "run-1") as folder:
        assert folder == store / "_incoming" / "run-1" and folder.is_dir()
        raw = make_batch("b", seed=5, n=30, start=JAN, end=FEB)
        staged = {}
        for name, path in raw.items():
            staged[name] = folder / path.name
            staged[name].write_bytes(path.read_bytes())
        stored = commit_batch(staged, raw_root=store)
    assert not (store / "_incoming").exists() and not (store / "_staging").exists()
    assert [b.batch_id for b in list_batches(store)] == [stored.batch_id]

    with pytest.raises(RuntimeError), staged_batch(store, "run-2") as folder:
        (folder / "users.parquet").write_bytes(b"half")
        raise RuntimeError("validation crashed")
    assert not (store / "_incoming").exists()

    left = store / "_incoming" / "run-3"  # a crashed run of the same id
    left.mkdir(parents=True)
    (left / "interactions.parquet").write_bytes(b"stale")
    with staged_batch(store, "run-3") as folder:
        assert list(folder.iterdir()) == []
    with pytest.raises(InvalidId), staged_batch(store, "../x"):
        pass
