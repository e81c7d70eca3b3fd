"""The incoming-batches ledger, `<data_dir>/runs/incoming.json`: which batch folders were run.

One entry per batch folder name: ``{run_id, status, message, finished_at}``. Only the incoming
flow's tasks read and write it, through these functions.
"""

from __future__ import annotations

import json
import os
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from recsys.settings import Settings

LEDGER_NAME = "incoming.json"


def incoming_root(settings: Settings) -> Path:
    """`<data_dir>/incoming`: where producers drop batch folders."""
    return Path(settings.data_dir) / "incoming"


def ledger_path(settings: Settings) -> Path:
    """The ledger of processed batch folders."""
    return settings.runs_dir / LEDGER_NAME


def read_ledger(path: Path) -> dict[str, dict[str, Any]]:
    """Batch folder name -> {run_id, status, message, finished_at}; empty when missing."""
    return json.loads(path.read_text()) if path.is_file() else {}


def record_outcome(path: Path, batch_name: str, *, run_id: str, status: str,
                   message: str) -> None:
    """Add or replace one batch folder's entry (write to a temporary file, then rename)."""
    ledger = read_ledger(path)
    ledger[batch_name] = {"run_id": run_id, "status": status, "message": message,
                          "finished_at": datetime.now(UTC).isoformat()}
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(ledger, indent=2, sort_keys=True))
    os.replace(tmp, path)
