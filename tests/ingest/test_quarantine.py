from __future__ import annotations

import json
from pathlib import Path

import pytest

from ingest.quarantine import quarantine_batch
from ingest.reader import read_batch
from ingest.validate import ValidationReport, validate_batch
from recsys.errors import InputFileError

from .conftest import write_batch


def _snapshot(root: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(root.iterdir())}


def test_quarantine_copies_originals_and_writes_reports(tmp_path: Path,
                                                        expectations_dir: Path) -> None:
    root = write_batch(tmp_path / "b", users="user_id\n007\n007\n008\n009\n")
    before = _snapshot(root)
    batch = read_batch(root)
    report = validate_batch(batch, expectations_dir=expectations_dir)

    qdir = quarantine_batch(batch, quarantine_root=tmp_path / "q", run_id="run-1",
                            report=report)

    assert qdir == tmp_path / "q" / "run-1"
    assert _snapshot(root) == before  # source untouched
    for name, data in before.items():
        assert (qdir / name).read_bytes() == data  # copies intact
    doc = json.loads((qdir / "report.json").read_text())
    assert doc["success"] is False and doc["run_id"] == "run-1"
    assert doc["failures"][0]["rule"] == "id_unique"
    assert {f["name"] for f in doc["files"]} == set(before)
    md = (qdir / "report.md").read_text()
    assert "FAILED" in md and "users.csv" in md and "id_unique" in md


def test_quarantine_unreadable_batch_from_its_directory(tmp_path: Path) -> None:
    root = write_batch(tmp_path / "b", interactions=b"\x00\x01binary\x00")
    with pytest.raises(InputFileError) as info:
        read_batch(root)
    report = ValidationReport.from_input_error(info.value)

    qdir = quarantine_batch(root, quarantine_root=tmp_path / "q", run_id="run-2", report=report)

    assert (qdir / "interactions.csv").read_bytes() == b"\x00\x01binary\x00"
    assert (root / "interactions.csv").exists()
    doc = json.loads((qdir / "report.json").read_text())
    assert doc["failures"][0]["dataset"] == "interactions"
    assert doc["failures"][0]["rule"] == "csv_text"


def test_quarantine_rejects_path_like_run_id(tmp_path: Path) -> None:
    with pytest.raises(ValueError):
        quarantine_batch(tmp_path, quarantine_root=tmp_path / "q", run_id="../x",
                         report=ValidationReport(success=False))
