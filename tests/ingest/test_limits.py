"""Regression (issue 13): a 200 MB single-line field was rejected, but took 108 s and 5.2 GB,
printed the value four times (an 838 MB log), wrote 400 MB of reports and a 200 MB HTML page.

Lines and values are bounded where a file is read, and every value shown anywhere is cut to a
few hundred characters (`ingest.sanitize`)."""

from __future__ import annotations

import logging
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from ingest.input_checks import scan_csv_lines
from ingest.sanitize import MAX_VALUE_CHARS, short_text, short_value
from ingest.stage import ingest_batch
from recsys.errors import InputFileError, ValidationFailed
from recsys.settings import Settings

from .conftest import INTERACTIONS_CSV, ITEMS_CSV, write_batch

BIG = 20 * 1024 * 1024  # a 20 MB field stands for the probe's 200 MB one


def _files_under(folder: Path) -> dict[str, int]:
    return {str(p.relative_to(folder)): p.stat().st_size for p in folder.rglob("*")
            if p.is_file()}


def test_a_20mb_single_line_field_is_refused_quickly_and_quietly(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    root = write_batch(tmp_path / "b", items=ITEMS_CSV + "4," + "x" * BIG + ",Drama\n")
    settings = Settings(data_dir=tmp_path / "data")
    caplog.set_level(logging.INFO)

    started = time.perf_counter()
    with pytest.raises(InputFileError) as info:
        ingest_batch(root, run_id="big", settings=settings)
    elapsed = time.perf_counter() - started

    error = info.value
    assert (error.path.name, error.rule) == ("items.csv", "max_line_length")
    assert "line 5" in str(error) and f"{settings.max_line_bytes:,} bytes" in str(error)
    assert len(str(error)) < 1000
    assert elapsed < 30  # a scan, not a parse of 20 MB into pandas and GE
    reports = {**_files_under(settings.validation_dir / "big"),
               **{k: v for k, v in _files_under(settings.quarantine_dir / "big").items()
                  if k.startswith("report")}}
    assert reports and all(size < 20_000 for size in reports.values()), reports
    assert len(caplog.text) < 20_000
    # The batch is quarantined intact all the same.
    assert (settings.quarantine_dir / "big" / "items.csv").stat().st_size > BIG


def test_a_20mb_parquet_value_is_refused(tmp_path: Path) -> None:
    root = write_batch(tmp_path / "b", users=None)
    pq.write_table(pa.table({"user_id": ["007", "008", "009"],
                             "occupation": ["x", "y" * BIG, "z"]}), root / "users.parquet")
    settings = Settings(data_dir=tmp_path / "data", validation_data_docs=False)
    with pytest.raises(InputFileError) as info:
        ingest_batch(root, run_id="big", settings=settings)
    assert (info.value.path.name, info.value.column, info.value.rule) == (
        "users.parquet", "occupation", "max_value_length")
    assert len(str(info.value)) < 1000


def test_values_under_the_line_limit_are_shown_cut_everywhere(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """A 100 kB id passes the reader, fails the contract (unknown item), and is shown as a
    few hundred characters in the error, the reports and Data Docs."""
    value = "i" + "9" * 100_000
    root = write_batch(tmp_path / "b", interactions=INTERACTIONS_CSV + f"007,{value},881250949,4\n")
    settings = Settings(data_dir=tmp_path / "data")
    caplog.set_level(logging.INFO)

    with pytest.raises(ValidationFailed) as info:
        ingest_batch(root, run_id="long", settings=settings)

    assert len(str(info.value)) < 2000
    assert info.value.failures[0]["sample"] == [short_text(value)]
    shown = value[:MAX_VALUE_CHARS + 1]
    for folder in (settings.validation_dir / "long", settings.quarantine_dir / "long"):
        for name in _files_under(folder):
            if name.endswith((".json", ".md", ".html")):
                assert shown not in (folder / name).read_text(errors="replace"), name
    assert shown not in caplog.text


def test_scan_csv_lines_counts_rows_and_finds_a_long_line_anywhere(tmp_path: Path) -> None:
    path = tmp_path / "t.csv"
    for lines, long_at in (([b"h"] + [b"a" * 10] * 5, None), ([b"h", b"a" * 101, b"b"], 2),
                           ([b"h"] + [b"a" * 60] * 3 + [b"c" * 150] + [b"d"], 5)):
        path.write_bytes(b"\n".join(lines) + b"\n")
        if long_at is None:
            assert scan_csv_lines(path, 100) == len(lines) - 1
        else:
            with pytest.raises(InputFileError, match=f"line {long_at} "):
                scan_csv_lines(path, 100)
    # Lines straddling the scan's blocks, and inside one block (exact lengths, no false alarm).
    import ingest.input_checks as checks

    block = checks._SCAN_BLOCK_BYTES
    try:
        checks._SCAN_BLOCK_BYTES = 64
        rows = [b"r" * n for n in (10, 100, 30, 100, 5, 100)]
        path.write_bytes(b"h\n" + b"\n".join(rows))
        assert scan_csv_lines(path, 100) == len(rows)
        with pytest.raises(InputFileError, match="line 3 "):
            scan_csv_lines(path, 99)
    finally:
        checks._SCAN_BLOCK_BYTES = block


def test_short_value_keeps_types_and_cuts_text() -> None:
    assert short_value({"a": ["x" * 1000, 5, None, 1.5]}) == {
        "a": [short_text("x" * 1000), 5, None, 1.5]}
    assert len(short_text("x" * 10_000)) < MAX_VALUE_CHARS + 40
    assert short_text("short") == "short"
    assert len(short_value(list(range(1000)))) <= 101
