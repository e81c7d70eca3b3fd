"""Phase `generate`: the benchmark's batch, generated deterministically (not counted)."""

from __future__ import annotations

import json
import shutil
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

from bench.workspace import SEED, Size, batch_dir, phase_main
from recsys.datagen import generate_batch


def generate(work: Path, size: Size, uri: str) -> dict[str, Any]:
    """Generate the batch for `size` (seed 42) into the work folder; reuse an identical one."""
    out = batch_dir(work)
    marker = work / "generated.json"
    spec = json.dumps({**asdict(size), "seed": SEED}, sort_keys=True)
    if marker.exists() and marker.read_text() == spec:  # same size and seed: reuse the batch
        return {"seconds": 0.0, "reused": True,
                "bytes": sum(f.stat().st_size for f in out.iterdir())}
    shutil.rmtree(out, ignore_errors=True)
    marker.unlink(missing_ok=True)
    started = time.perf_counter()
    generate_batch(out, users=size.users, items=size.items, interactions=size.interactions,
                   seed=SEED, fmt="parquet")
    seconds = time.perf_counter() - started
    marker.write_text(spec)
    return {"seconds": seconds, "bytes": sum(f.stat().st_size for f in out.iterdir())}


PHASES = {"generate": generate}

if __name__ == "__main__":
    phase_main(PHASES)
