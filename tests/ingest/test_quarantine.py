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
from ingest.stage import ingest_batch
from ingest.validate import validate_batch
from recsys.errors import InputFileError, QuarantineError, RecsysError, ValidationFailed
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


def test_quarantine_unreadable_batch_leaves_other_files_in_place(tmp_path: Path) -> None:
    root = write_batch(tmp_path / "b", interactions=b"\x00\x01binary\x00")
    (root / "notes").mkdir()
    (root / "notes" / "readme.txt").write_text("from the vendor")
    with pytest.raises(InputFileError) as info:
        read_batch(root)
    report = ValidationReport.from_input_error(info.value)

    qdir = quarantine_batch(root, quarantine_root=tmp_path / "q", run_id="run-2", report=report)

    assert (qdir / "interactions.csv").read_bytes() == b"\x00\x01binary\x00"
    # Not a batch file: neither taken nor deleted (issue 13); the folder stays for it.
    assert (root / "notes" / "readme.txt").read_text() == "from the vendor"
    assert not (qdir / "notes").exists()
    assert sorted(p.name for p in root.iterdir()) == ["notes"]
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


# ------------------------------------------------------ issue 13: quarantine takes only its own


def _data_dir_with_state(root: Path) -> Path:
    """A data dir as a deployment has it: models, the raw store, the embedded MongoDB's files,
    and a demo batch folder; returned is the data dir (`root/data`, inside a fake repository)."""
    data = root / "data"
    (data / "models" / "v1").mkdir(parents=True)
    (data / "models" / "v1" / "model.npz").write_bytes(b"model weights")
    (data / "mongo").mkdir()
    (data / "mongo" / "WiredTiger.wt").write_bytes(b"mongo storage")
    (data / "store" / "users").mkdir(parents=True)
    (data / "store" / "users" / "batch=abc.parquet").write_bytes(b"stored batch")
    (root / "pyproject.toml").write_text("[project]\nname = 'fake'\n")
    # A broken batch right in the data dir: the reader fails, which used to quarantine it all.
    (data / "users.csv").write_text("user_id\n007\n")
    return data


@pytest.mark.parametrize("where", ["data", "repository", "models", "store", "mongo",
                                   "quarantine"])
def test_an_input_that_is_holds_or_lies_in_owned_data_is_refused(tmp_path: Path,
                                                                  where: str) -> None:
    """Regression (issue 13): `recsys pipeline --input data` moved the whole data dir into
    quarantine and deleted the originals (models, raw store, MongoDB's files); `--input .`
    would have done it to the repository."""
    data = _data_dir_with_state(tmp_path / "repo")
    (data / "quarantine").mkdir()
    settings = Settings(data_dir=data, validation_data_docs=False)
    input_dir = {"data": data, "repository": data.parent, "models": data / "models" / "v1",
                 "store": data / "store", "mongo": data / "mongo",
                 "quarantine": data / "quarantine"}[where]
    before = _snapshot(tmp_path)

    with pytest.raises(InputFileError) as info:
        ingest_batch(input_dir, run_id="oops", settings=settings)

    assert info.value.rule == "input_outside_data_dir"
    assert str(input_dir) in str(info.value) and str(data) in str(info.value)
    assert _snapshot(tmp_path) == before  # nothing read into the store, moved or deleted
    assert not (data / "quarantine" / "oops").exists()
    assert not (data / "validation").exists()


def test_batch_folders_inside_the_data_dir_are_still_accepted(tmp_path: Path) -> None:
    """`data/demo` (the Makefile's demo batch) and `data/quarantine/<run id>` (re-submission
    after a fix) are batch folders, not owned data: they stay valid inputs."""
    data = _data_dir_with_state(tmp_path / "repo")
    settings = Settings(data_dir=data, validation_data_docs=False)
    bad = write_batch(data / "demo", users="user_id\n007\n007\n008\n009\n")
    with pytest.raises(ValidationFailed):
        ingest_batch(bad, run_id="r1", settings=settings)
    quarantined = data / "quarantine" / "r1"
    (quarantined / "users.csv").write_text("user_id\n007\n008\n009\n")  # the fix

    result = ingest_batch(quarantined, run_id="r2", settings=settings)

    assert result.report.success and not result.stored.skipped
    assert (data / "models" / "v1" / "model.npz").read_bytes() == b"model weights"


def test_quarantine_takes_only_the_batch_files_it_recognised(tmp_path: Path) -> None:
    """Regression (issue 13): quarantine took every file under the input dir (rglob) and
    deleted them; now only users/items/interactions files move, the rest stays untouched."""
    root = write_batch(tmp_path / "b", users="user_id\n007\n007\n")
    (root / "models").mkdir()
    (root / "models" / "model.npz").write_bytes(b"weights")
    (root / "notes.txt").write_text("keep me")
    (root / "users.json").write_text("[]")  # not an accepted format
    batch_files = {"users.csv", "items.csv", "interactions.csv"}
    before = _snapshot(root)

    qdir = quarantine_batch(root, quarantine_root=tmp_path / "q", run_id="r",
                            report=ValidationReport(success=False))

    left = _snapshot(root)
    assert left == {name: data for name, data in before.items() if name not in batch_files}
    assert {p.name for p in qdir.iterdir()} == batch_files | {"report.json", "report.md"}
    for name in batch_files:
        assert (qdir / name).read_bytes() == before[name]


def test_quarantine_refuses_a_folder_holding_the_quarantine_root(tmp_path: Path) -> None:
    data = _data_dir_with_state(tmp_path / "repo")
    before = _snapshot(tmp_path)
    for input_dir in (data, data.parent):
        with pytest.raises(InputFileError, match="input_outside_data_dir"):
            quarantine_batch(input_dir, quarantine_root=data / "quarantine", run_id="r",
                             report=ValidationReport(success=False))
    assert _snapshot(tmp_path) == before


def test_an_original_changed_after_its_copy_is_kept(tmp_path: Path,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    """An original is deleted only when it still is what was copied and verified."""
    root = write_batch(tmp_path / "b")
    fsync_tree = quarantine_module._fsync_tree

    def late_writer(folder: Path) -> None:
        fsync_tree(folder)
        (root / "users.csv").write_text("user_id\n007\n008\n009\n010\n")  # after the copy

    monkeypatch.setattr(quarantine_module, "_fsync_tree", late_writer)
    qdir = quarantine_batch(root, quarantine_root=tmp_path / "q", run_id="r",
                            report=ValidationReport(success=False))

    assert (root / "users.csv").read_text().endswith("010\n")  # not deleted
    assert not (root / "items.csv").exists() and not (root / "interactions.csv").exists()
    assert (qdir / "users.csv").read_text() == "user_id,age,gender,occupation,zip\n" \
        "007,24,M,technician,85711\n008,53,F,other,94043\n009,23,M,writer,32067\n"
