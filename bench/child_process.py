"""Measurements in fresh child processes: wall time and the child's own peak RSS.

Every benchmark phase runs as `python -m <module> ...` from the checkout, so no phase inherits
another's memory, imports or warm caches. The child prints its result as one JSON line (the last
line of its stdout) with its peak resident set added; the parent reads that line.
"""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

# The checkout bench runs from: children start here, so `python -m bench...` finds the package.
REPO = Path(__file__).resolve().parent.parent


def peak_rss_mib() -> float:
    """This process's peak resident set in MiB.

    Read from `VmHWM`, which, unlike `ru_maxrss`, starts afresh at exec, so a child does not
    report its parent's peak.
    """
    status = Path("/proc/self/status")
    if status.exists():
        for line in status.read_text().splitlines():
            if line.startswith("VmHWM:"):
                return round(int(line.split()[1]) / 1024, 1)
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)


def report(result: dict[str, Any]) -> None:
    """Child side: add the peak RSS and print `result` as the JSON line the parent reads."""
    result["peak_rss_mib"] = peak_rss_mib()
    print(json.dumps(result, default=str), flush=True)


def run_child(module: str, args: list[str], *, log_file: Path | None = None,
              env: dict[str, str] | None = None) -> dict[str, Any]:
    """Run `python -m module *args` in the checkout; return the JSON of its last stdout line.

    Args:
        module: the module to run (e.g. "bench.phases.validate_batch").
        args: its command-line arguments.
        log_file: where the child's stderr goes (appended, after a header line); None lets it
            through to this process's stderr.
        env: variables added to this process's environment.

    Returns:
        The child's result, with `process_seconds` (its wall time, start-up included) added.

    Raises:
        RuntimeError: the child exited with a non-zero status.
    """
    cmd = [sys.executable, "-m", module, *args]
    # GE reports usage over the network unless told not to; nothing here may phone home.
    child_env = {**os.environ, "GX_ANALYTICS_ENABLED": "False", **(env or {})}
    started = time.perf_counter()
    if log_file is None:
        proc = subprocess.run(cmd, cwd=REPO, env=child_env, stdout=subprocess.PIPE, text=True,
                              check=False)
    else:
        with log_file.open("a") as log:
            log.write(f"\n=== {module} {' '.join(args[:1])} "
                      f"({datetime.now(UTC).isoformat(timespec='seconds')})\n")
            log.flush()
            proc = subprocess.run(cmd, cwd=REPO, env=child_env, stdout=subprocess.PIPE,
                                  stderr=log, text=True, check=False)
    if proc.returncode != 0:
        where = f"; see {log_file}" if log_file else ""
        raise RuntimeError(f"{module} {' '.join(args[:1])} failed "
                           f"(status {proc.returncode}){where}")
    result: dict[str, Any] = json.loads(proc.stdout.strip().splitlines()[-1])
    result["process_seconds"] = time.perf_counter() - started
    return result
