"""Move a rejected batch aside, intact, with a report a machine and a person can read.

`quarantine_batch` *moves* the batch's table files -- only ``users``, ``items`` and
``interactions`` as ``.csv`` or ``.parquet`` at the top of the input directory, the files the
reader recognises (`ingest.reader.batch_files`); anything else there is not the batch's and stays
where it is. Each file is copied into a staging folder next to the target, each copy's SHA-256 is
checked against its source, the reports are written, the staging folder is renamed to
``<quarantine root>/<run id>`` in one step, and only then are the originals removed -- each one
only if it is still the file that was copied (same size, modification time and inode), so a file
rewritten meanwhile is kept. A failure at any point before the rename leaves the originals
untouched, so data is never lost. An input directory that is or holds the quarantine root, or
lies deeper in it than a quarantined batch, is refused before anything is copied.

The quarantine folder is a valid batch directory again: the reader only looks at
``users``/``items``/``interactions`` files, so after a fix it can be re-submitted with
``recsys pipeline --input <quarantine root>/<run id>`` (its ``report.json``/``report.md`` are
ignored; if it is rejected again they travel along as ``original_report.*``).
"""

from __future__ import annotations

import json
import logging
import os
import shutil
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from ingest.reader import Batch, batch_files
from ingest.report import ValidationReport
from ingest.sanitize import md_code, md_text
from recsys.errors import InputFileError, QuarantineError
from recsys.hashing import file_sha256

logger = logging.getLogger(__name__)

REPORT_FILES = ("report.json", "report.md")


def quarantine_batch(
    batch_or_input_dir: Batch | Path | str,
    *,
    quarantine_root: Path,
    run_id: str,
    report: ValidationReport,
    move: bool = True,
) -> Path:
    """Move the batch's files to ``quarantine_root/run_id/`` with ``report.json``/``.md``.

    The table files the reader recognises (`ingest.reader.batch_files`) are carried over byte
    for byte, so a batch rejected for holding both ``users.csv`` and ``users.parquet`` keeps
    both; other files and folders in the input directory are left alone. When the input is
    itself a quarantined batch (a folder of `quarantine_root`), its reports travel along as
    ``original_report.*``. ``report.json`` records each file's original path, size and SHA-256.

    Args:
        batch_or_input_dir: the batch (its ``input_dir`` is used) or the input directory.
        quarantine_root: where quarantined batches live (``settings.quarantine_dir``).
        run_id: names the quarantine folder; a plain directory name.
        report: the validation report to store with the files.
        move: remove the originals once their copies are verified (the default); False
            copies only.

    Returns:
        The quarantine directory.

    Raises:
        ValueError: `run_id` is not a plain name, or the target already exists.
        InputFileError: the input directory is or holds `quarantine_root`, or lies inside it
            deeper than a quarantined batch (rule ``input_outside_data_dir``); nothing moved.
        QuarantineError: a copy did not match its source (nothing was removed).
    """
    if isinstance(batch_or_input_dir, Batch):
        input_dir = Path(batch_or_input_dir.input_dir)
    else:
        input_dir = Path(batch_or_input_dir)
    if not run_id or Path(run_id).name != run_id or run_id in {".", ".."}:
        raise ValueError(f"run_id must be a plain directory name, got {run_id!r}")

    root = Path(quarantine_root)
    _check_not_quarantine(input_dir, root)
    target = root / run_id
    if target.exists():
        raise ValueError(f"quarantine folder already exists: {target}")
    staging = root / f".{run_id}.partial"
    if staging.exists():
        shutil.rmtree(staging)  # left by a crashed attempt; the originals are still in place
    staging.mkdir(parents=True)

    originals = _owned_files(input_dir, root)
    copied: list[dict[str, Any]] = []
    verified: dict[Path, tuple[int, int, int]] = {}
    try:
        for source in originals:
            name = (f"original_{source.name}" if source.name in REPORT_FILES else source.name)
            dest = staging / name
            before = _identity(source)
            shutil.copy2(source, dest)
            digest = file_sha256(dest)
            if digest != file_sha256(source) or _identity(source) != before:
                raise QuarantineError(f"copy of {source} to {dest} does not match its source")
            verified[source] = before
            copied.append({"name": name, "source": str(source),
                           "bytes": dest.stat().st_size, "sha256": digest})

        document = {
            "run_id": run_id,
            "input_dir": str(input_dir),
            "quarantined_at": datetime.now(UTC).isoformat(),
            "moved": move,
            "resubmit": f"recsys pipeline --input {target}",
            "files": copied,
            **report.to_dict(),
        }
        _write_text(staging / "report.json", json.dumps(document, indent=2, ensure_ascii=False))
        _write_text(staging / "report.md", _markdown(document, report))
        _fsync_tree(staging)
        staging.rename(target)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise

    if move:
        _remove_originals(input_dir, verified)
    logger.warning("quarantined batch %s to %s (%d files, %d failures)", input_dir, target,
                   len(copied), len(report.failures))
    return target


def _check_not_quarantine(input_dir: Path, root: Path) -> None:
    """Refuse an input that is or holds the quarantine root, or lies deeper in it than one
    quarantined batch: quarantining it would move quarantine's own folders."""
    path, quarantine = input_dir.resolve(), root.resolve()
    inside = path.relative_to(quarantine).parts if path.is_relative_to(quarantine) else None
    if quarantine.is_relative_to(path) or (inside is not None and (
            len(inside) != 1 or inside[0].startswith("."))):
        raise InputFileError(
            input_dir, f"refused: the batch folder is, holds or lies inside the quarantine "
            f"folder {root}; only a quarantined batch ({root}/<run id>) may be re-submitted",
            rule="input_outside_data_dir")


def _owned_files(input_dir: Path, root: Path) -> list[Path]:
    """The files quarantine takes: the batch's table files, and the reports of a batch that
    was quarantined before (a folder of `root`)."""
    files = batch_files(input_dir)
    if input_dir.is_dir() and input_dir.resolve().parent == root.resolve():
        files += [input_dir / name for name in REPORT_FILES if (input_dir / name).is_file()]
    return sorted(files)


def _identity(path: Path) -> tuple[int, int, int]:
    """Size, modification time and inode: a file rewritten after its copy differs."""
    stat = path.stat()
    return stat.st_size, stat.st_mtime_ns, stat.st_ino


def _remove_originals(input_dir: Path, verified: dict[Path, tuple[int, int, int]]) -> None:
    """Delete each original that is still the file copied and verified; keep any other."""
    for path, identity in verified.items():
        try:
            unchanged = _identity(path) == identity
        except FileNotFoundError:
            continue
        if unchanged:
            path.unlink()
        else:
            logger.warning("kept %s: it changed after it was copied to quarantine", path)
    try:
        input_dir.rmdir()  # only when nothing else is left in it
    except OSError:
        pass


def _markdown(document: dict[str, Any], report: ValidationReport) -> str:
    files = ", ".join(md_code(c["name"]) for c in document["files"]) or "none"
    header = (f"- run: {md_code(document['run_id'])}\n- input: {md_text(document['input_dir'])}\n"
              f"- quarantined at: {document['quarantined_at']}\n- files: {files}\n"
              f"- re-submit after a fix: {md_text(document['resubmit'])}\n\n")
    first, _, rest = report.to_markdown().partition("\n")
    return f"{first}\n\n{header}{rest.lstrip()}"


def _fsync_tree(folder: Path) -> None:
    for path in folder.rglob("*"):
        if path.is_file():
            with path.open("rb") as fh:
                os.fsync(fh.fileno())


def _write_text(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    tmp.replace(path)
