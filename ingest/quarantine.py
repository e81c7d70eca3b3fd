"""Set a rejected batch aside, intact, with a report a machine and a person can read."""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from ingest.reader import Batch
from ingest.validate import ValidationReport

logger = logging.getLogger(__name__)


def quarantine_batch(
    batch_or_input_dir: Batch | Path | str,
    *,
    quarantine_root: Path,
    run_id: str,
    report: ValidationReport,
) -> Path:
    """Copy the batch's original files to ``quarantine_root/run_id/`` with ``report.json``/``.md``.

    Every regular file at the top of the input directory is copied byte for byte (so a batch
    rejected for holding both ``users.csv`` and ``users.parquet`` keeps both); files read from
    elsewhere (`Batch.sources`) are copied too. The source is never modified or deleted.
    ``report.json`` records each copied file's size and SHA-256.

    Returns:
        The quarantine directory.
    """
    if isinstance(batch_or_input_dir, Batch):
        input_dir = Path(batch_or_input_dir.input_dir)
        extra = list(batch_or_input_dir.sources.values())
    else:
        input_dir = Path(batch_or_input_dir)
        extra = []
    if not run_id or Path(run_id).name != run_id or run_id in {".", ".."}:
        raise ValueError(f"run_id must be a plain directory name, got {run_id!r}")

    target = Path(quarantine_root) / run_id
    target.mkdir(parents=True, exist_ok=True)

    originals: list[Path] = []
    if input_dir.is_dir():
        originals = sorted(p for p in input_dir.iterdir() if p.is_file())
    for path in extra:
        path = Path(path)
        if path.is_file() and path.resolve() not in {p.resolve() for p in originals}:
            originals.append(path)

    reserved = {"report.json", "report.md"}
    copied: list[dict[str, Any]] = []
    for source in originals:
        name = source.name if source.name not in reserved else f"original_{source.name}"
        dest = target / name
        shutil.copy2(source, dest)
        copied.append({"name": name, "source": str(source), "bytes": dest.stat().st_size,
                       "sha256": _sha256(dest)})

    document = {
        "run_id": run_id,
        "input_dir": str(input_dir),
        "quarantined_at": datetime.now(UTC).isoformat(),
        "files": copied,
        **report.to_dict(),
    }
    _write_text(target / "report.json", json.dumps(document, indent=2, ensure_ascii=False))
    header = (f"- run: `{run_id}`\n- input: `{input_dir}`\n- quarantined at: "
              f"{document['quarantined_at']}\n- files: "
              + (", ".join(f"`{c['name']}`" for c in copied) or "none") + "\n\n")
    markdown = report.to_markdown()
    first, _, rest = markdown.partition("\n")
    _write_text(target / "report.md", f"{first}\n\n{header}{rest.lstrip()}")
    logger.warning("quarantined batch %s to %s (%d failures)", input_dir, target,
                   len(report.failures))
    return target


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _write_text(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    tmp.replace(path)
