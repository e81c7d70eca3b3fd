"""Timing check on MovieLens 100K (skips when the dataset is absent)."""

from __future__ import annotations

import time
from pathlib import Path

import pandas as pd
import pytest

from ingest.ge_context import import_gx
from ingest.normalize import normalize_batch
from ingest.reader import read_batch
from ingest.validate import validate_batch
from ingest.writer import write_batch_parquet
from recsys.settings import Settings

ML100K = Path(__file__).resolve().parents[2].parent / "shared" / "datasets" / "ml-100k"

pytestmark = [
    pytest.mark.movielens,
    pytest.mark.skipif(not (ML100K / "u.data").exists(), reason="ml-100k not available"),
]


def _ml100k_batch(root: Path) -> Path:
    root.mkdir()
    pd.read_csv(ML100K / "u.data", sep="\t",
                names=["user_id", "item_id", "rating", "timestamp"]).to_csv(
        root / "interactions.csv", index=False)
    pd.read_csv(ML100K / "u.user", sep="|",
                names=["user_id", "age", "gender", "occupation", "zip"]).to_csv(
        root / "users.csv", index=False)
    raw = pd.read_csv(ML100K / "u.item", sep="|", encoding="latin-1", header=None)
    genres = [line.split("|")[0] for line in
              (ML100K / "u.genre").read_text(encoding="latin-1").splitlines() if line.strip()]
    flags = raw.iloc[:, 5:5 + len(genres)].to_numpy()
    pd.DataFrame({
        "item_id": raw[0],
        "title": raw[1].fillna("(untitled)"),
        "genres": ["|".join(g for g, f in zip(genres, row, strict=True) if f == 1)
                   for row in flags],
    }).to_csv(root / "items.csv", index=False)
    return root


def test_ml100k_validates_in_a_few_seconds(tmp_path: Path, expectations_dir: Path) -> None:
    batch = read_batch(_ml100k_batch(tmp_path / "ml"))
    import_gx()  # one-off import cost is not what we time

    started = time.perf_counter()
    report = validate_batch(batch, expectations_dir=expectations_dir,
                            settings=Settings(data_dir=tmp_path / "data"))
    elapsed = time.perf_counter() - started

    assert report.success, report.failures
    assert len(batch.interactions) == 100_000
    assert elapsed < 5.0, f"validation took {elapsed:.1f}s"
    paths = write_batch_parquet(normalize_batch(batch), tmp_path / "out")
    assert paths["interactions"].stat().st_size > 0
