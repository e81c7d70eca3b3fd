from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import pytest

import ingest.quarantine as quarantine_module
from ingest.quarantine import quarantine_batch
from ingest.reader import read_batch
from ingest.report import ValidationReport
from ingest.validate import validate_batch
from recsys.errors import InputFileError, QuarantineError, RecsysError
from recsys.settings import Settings

from .conftest import write_batch


def _snapshot(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes()
            for p in sorted(root.rglob("*")) if p.is_file()}


def test_quarantine_moves_originals_and_writes_reports(tmp_path: Path,
                                                       expectations_dir: Path) -> None:
    root = write_batch(tmp_path / "b", users="user_id\n007\n007\n008\n009\n")
    before = _snapshot(root)
    batch = read_batch(root)
    report = validate_batch(batch, expectations_dir=expectations_dir,
                            settings=Settings(data_dir=tmp_path / "data"))

    qdir = quarantine_batch(batch, quarantine_root=tmp_path / "q", run_id="run-1",
                            report=report)

    assert qdir == tmp_path / "q" / "run-1"
    assert not root.exists()  # moved: the originals are gone from the input
    for name, data in before.items():
        assert (qdir / name).read_bytes() == data  # moved intact
    doc = json.loads((qdir / "report.json").read_text())
    assert doc["success"] is False and doc["run_id"] == "run-1" and doc["moved"] is True
    assert doc["failures"][0]["rule"] == "id_unique"
    assert {f["name"] for f in doc["files"]} == set(before)
    for entry in doc["files"]:
        assert entry["sha256"] == hashlib.sha256(before[entry["name"]]).hexdigest()
    assert doc["resubmit"] == f"recsys pipeline --input {qdir}"
    md = (qdir / "report.md").read_text()
    assert "FAILED" in md and "users.csv" in md and "id_unique" in md
    assert not list((tmp_path / "q").glob(".*partial"))


def test_quarantine_unreadable_batch_keeps_subfolders(tmp_path: Path) -> None:
    root = write_batch(tmp_path / "b", interactions=b"\x00\x01binary\x00")
    (root / "notes").mkdir()
    (root / "notes" / "readme.txt").write_text("from the vendor")
    with pytest.raises(InputFileError) as info:
        read_batch(root)
    report = ValidationReport.from_input_error(info.value)

    qdir = quarantine_batch(root, quarantine_root=tmp_path / "q", run_id="run-2", report=report)

    assert (qdir / "interactions.csv").read_bytes() == b"\x00\x01binary\x00"
    assert (qdir / "notes" / "readme.txt").read_text() == "from the vendor"
    assert not root.exists()
    doc = json.loads((qdir / "report.json").read_text())
    assert doc["failures"][0]["dataset"] == "interactions"
    assert doc["failures"][0]["rule"] == "csv_text"


def test_quarantined_folder_is_a_valid_input_again(tmp_path: Path,
                                                   expectations_dir: Path) -> None:
    root = write_batch(tmp_path / "b", users="user_id\n007\n007\n008\n009\n")
    report = validate_batch(read_batch(root), expectations_dir=expectations_dir,
                            settings=Settings(data_dir=tmp_path / "data"))
    qdir = quarantine_batch(root, quarantine_root=tmp_path / "q", run_id="run-3", report=report)

    (qdir / "users.csv").write_text("user_id\n007\n008\n009\n")  # the fix
    fixed = validate_batch(read_batch(qdir), expectations_dir=expectations_dir,
                           settings=Settings(data_dir=tmp_path / "data"))
    assert fixed.success, fixed.failures  # report.json / report.md are ignored by the reader

    # Rejected again: the old reports travel along under another name, nothing is lost.
    (qdir / "users.csv").write_text("user_id\n007\n007\n")
    again = quarantine_batch(qdir, quarantine_root=tmp_path / "q", run_id="run-4",
                             report=validate_batch(read_batch(qdir),
                                                   expectations_dir=expectations_dir,
                                                   settings=Settings(data_dir=tmp_path / "data")))
    assert not qdir.exists()
    assert {"original_report.json", "original_report.md", "report.json", "report.md",
            "users.csv", "items.csv", "interactions.csv"} <= {p.name for p in again.iterdir()}


def test_a_bad_copy_leaves_the_originals(tmp_path: Path, monkeypatch: pytest.MonkeyPatch
                                         ) -> None:
    root = write_batch(tmp_path / "b")
    before = _snapshot(root)

    def corrupting_copy(src: Path, dst: Path) -> None:
        shutil.copyfile(src, dst)
        Path(dst).write_bytes(Path(dst).read_bytes() + b"!")

    monkeypatch.setattr(quarantine_module.shutil, "copy2", corrupting_copy)
    with pytest.raises(QuarantineError) as info:
        quarantine_batch(root, quarantine_root=tmp_path / "q", run_id="run-5",
                         report=ValidationReport(success=False))
    assert isinstance(info.value, RecsysError) and info.value.status_code == 500

    assert _snapshot(root) == before
    assert not (tmp_path / "q" / "run-5").exists()
    assert not list((tmp_path / "q").iterdir())  # the staging folder was cleaned up


def test_copy_only_mode_and_existing_target(tmp_path: Path) -> None:
    root = write_batch(tmp_path / "b")
    before = _snapshot(root)
    qdir = quarantine_batch(root, quarantine_root=tmp_path / "q", run_id="run-6",
                            report=ValidationReport(success=False), move=False)
    assert _snapshot(root) == before
    assert (qdir / "users.csv").read_bytes() == before["users.csv"]
    with pytest.raises(ValueError, match="already exists"):
        quarantine_batch(root, quarantine_root=tmp_path / "q", run_id="run-6",
                         report=ValidationReport(success=False))
    assert _snapshot(root) == before


def test_quarantine_rejects_path_like_run_id(tmp_path: Path) -> None:
    with pytest.raises(ValueError):
        quarantine_batch(tmp_path, quarantine_root=tmp_path / "q", run_id="../x",
                         report=ValidationReport(success=False))
