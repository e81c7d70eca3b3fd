"""Flow plumbing: incoming ledger, backfill days, cache keys (the publish lock: tests/serving)."""

from __future__ import annotations

from datetime import UTC, date, datetime
from pathlib import Path

import pytest
from prefect.logging import disable_run_logger

from flows.backfill import as_of_days
from flows.caching import features_cache_key
from flows.ledger import read_ledger
from flows.tasks import find_new_batches, record_batch


def test_backfill_days_are_end_of_day_utc() -> None:
    days = as_of_days(date(2024, 1, 30), date(2024, 2, 3), every_days=2)
    assert [d.date() for d in days] == [date(2024, 1, 30), date(2024, 2, 1), date(2024, 2, 3)]
    assert all(d.tzinfo is UTC and (d.hour, d.minute, d.second) == (23, 59, 59) for d in days)
    with pytest.raises(ValueError, match="before"):
        as_of_days(date(2024, 2, 1), date(2024, 1, 1))


def test_incoming_batches_are_processed_once(tmp_path: Path) -> None:
    root, ledger = tmp_path / "incoming", tmp_path / "runs" / "incoming.json"
    for name in ("2024-01-02", "2024-01-01", ".partial", "_tmp"):
        (root / name).mkdir(parents=True)
    (root / "notes.txt").write_text("not a batch")
    with disable_run_logger():
        _check_ledger(root, ledger, tmp_path)


def _check_ledger(root: Path, ledger: Path, tmp_path: Path) -> None:
    assert [p.name for p in find_new_batches.fn(root, ledger)] == ["2024-01-01", "2024-01-02"]
    record_batch.fn(ledger, "2024-01-01", "run-1", "published", "model run-1")
    record_batch.fn(ledger, "2024-01-02", "run-2", "failed", "stage 'validate' failed: ...")
    assert find_new_batches.fn(root, ledger) == []
    assert read_ledger(ledger)["2024-01-02"]["status"] == "failed"
    assert find_new_batches.fn(tmp_path / "missing", ledger) == []


def test_features_cache_key_follows_store_content(tmp_path: Path, monkeypatch) -> None:
    from ingest.normalize import normalize_batch
    from ingest.raw_store import commit_batch
    from ingest.reader import read_batch
    from ingest.writer import write_batch_parquet
    from recsys.datagen import generate_batch
    from recsys.settings import Settings

    monkeypatch.setenv("RECSYS_DATA_DIR", str(tmp_path / "data"))
    settings = Settings()

    def stored_batch(seed: int) -> None:
        batch = generate_batch(tmp_path / f"in{seed}", users=20, items=10, interactions=100,
                               seed=seed)
        raw = write_batch_parquet(normalize_batch(read_batch(batch.directory)),
                                  tmp_path / f"raw{seed}")
        commit_batch(raw, raw_root=settings.store_dir)

    def key(as_of: str | None = None) -> str:
        return features_cache_key(None, {"settings": settings, "as_of": as_of})  # type: ignore[arg-type]

    stored_batch(1)
    first = key()
    assert key() == first  # same store, same key
    stored_batch(1)  # re-ingesting the same batch is a no-op: the key stays
    assert key() == first
    as_of = key(datetime(2024, 1, 1, tzinfo=UTC).isoformat())
    stored_batch(2)  # a new batch changes the key
    assert len({first, as_of, key()}) == 3
