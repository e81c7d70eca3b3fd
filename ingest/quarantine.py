"""Move a rejected batch aside, intact, with a report a machine and a person can read.

`quarantine_batch` *moves* the batch: every file under the input directory is copied into a
staging folder next to the target, each copy's SHA-256 is checked against its source, the reports
are written, the staging folder is renamed to ``<quarantine root>/<run id>`` in one step, and only
then are the originals removed. A failure at any point before the rename leaves the originals
untouched, so data is never lost.

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

from ingest.reader import Batch
from ingest.report import ValidationReport
from recsys.errors import QuarantineError
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

    Every regular file under the input directory (sub-folders included) is carried over byte
    for byte, so a batch rejected for holding both ``users.csv`` and ``users.parquet`` keeps
    both. Top-level files named like the reports are renamed ``original_<name>``.
    ``report.json`` records each file's original path, size and SHA-256.

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
        QuarantineError: a copy did not match its source (nothing was removed).
    """
    if isinstance(batch_or_input_dir, Batch):
        input_dir = Path(batch_or_input_dir.input_dir)
    else:
        input_dir = Path(batch_or_input_dir)
    if not run_id or Path(run_id).name != run_id or run_id in {".", ".."}:
        raise ValueError(f"run_id must be a plain directory name, got {run_id!r}")

    root = Path(quarantine_root)
    target = root / run_id
    if target.exists():
        raise ValueError(f"quarantine folder already exists: {target}")
    staging = root / f".{run_id}.partial"
    if staging.exists():
        shutil.rmtree(staging)  # left by a crashed attempt; the originals are still in place
    staging.mkdir(parents=True)

    originals = _files_under(input_dir)
    copied: list[dict[str, Any]] = []
    try:
        for source in originals:
            relative = source.relative_to(input_dir)
            if len(relative.parts) == 1 and relative.name in REPORT_FILES:
                relative = Path(f"original_{relative.name}")
            dest = staging / relative
            dest.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, dest)
            digest = file_sha256(dest)
            if digest != file_sha256(source):
                raise QuarantineError(f"copy of {source} to {dest} does not match its source")
            copied.append({"name": relative.as_posix(), "source": str(source),
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
        _remove_originals(input_dir, originals)
    logger.warning("quarantined batch %s to %s (%d files, %d failures)", input_dir, target,
                   len(copied), len(report.failures))
    return target


def _files_under(input_dir: Path) -> list[Path]:
    if not input_dir.is_dir():
        return []
    return sorted(p for p in input_dir.rglob("*") if p.is_file())


def _remove_originals(input_dir: Path, originals: list[Path]) -> None:
    for path in originals:
        path.unlink()
    # Empty folders last, deepest first; a folder holding anything else stays.
    folders = sorted({p.parent for p in originals} | {input_dir},
                     key=lambda p: len(p.parts), reverse=True)
    for folder in folders:
        try:
            folder.rmdir()
        except OSError:
            pass


def _markdown(document: dict[str, Any], report: ValidationReport) -> str:
    files = ", ".join(f"`{c['name']}`" for c in document["files"]) or "none"
    header = (f"- run: `{document['run_id']}`\n- input: `{document['input_dir']}`\n"
              f"- quarantined at: {document['quarantined_at']}\n- files: {files}\n"
              f"- re-submit after a fix: `{document['resubmit']}`\n\n")
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
