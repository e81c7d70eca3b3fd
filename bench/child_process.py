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
from collections.abc import Mapping
from pathlib import Path
from typing import Any

# The checkout bench runs from: children start here, so `python -m bench...` finds the package.
REPO = Path(__file__).resolve().parent.parent


def process_peak_rss_mib(pid: int | str = "self") -> float:
    """The peak resident set of process `pid` (default: this one) in MiB.

    Read from `VmHWM`, which, unlike `ru_maxrss`, starts afresh at exec, so a child does not
    report its parent's peak. Where /proc is missing: this process's `ru_maxrss`, or 0.0 for
    another process.
    """
    status = Path(f"/proc/{pid}/status")
    if status.exists():
        for line in status.read_text().splitlines():
            if line.startswith("VmHWM:"):
                return round(int(line.split()[1]) / 1024, 1)
    if pid != "self":
        return 0.0
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)


def peak_rss_mib() -> float:
    """This process's peak resident set in MiB (`VmHWM`)."""
    return process_peak_rss_mib()


def report(result: dict[str, Any]) -> None:
    """Child side: print `result` as the JSON line the parent reads, with a peak RSS.

    The peak is this process's unless the phase measured another process (a server it
    started) and reported that one's as `peak_rss_mib` itself.
    """
    result.setdefault("peak_rss_mib", peak_rss_mib())
    print(json.dumps(result, default=str), flush=True)


def run_child(module: str, args: list[str], *, log_file: Path | None = None,
              env: Mapping[str, str | None] | None = None) -> dict[str, Any]:
    """Run `python -m module *args` in the checkout; return the JSON of its last stdout line.

    Args:
        module: the module to run (e.g. "bench.phases.validate_batch").
        args: its command-line arguments.
        log_file: where the child's stderr goes (appended, after a header line); None lets it
            through to this process's stderr.
        env: variables added to this process's environment for the child; None removes a
            variable (so that a setting exported here cannot leak into the child).

    Returns:
        The child's result, with `process_seconds` (its wall time, start-up included) added.

    Raises:
        RuntimeError: the child exited with a non-zero status.
    """
    cmd = [sys.executable, "-m", module, *args]
    # GE reports usage over the network unless told not to; nothing here may phone home.
    child_env = {**os.environ, "GX_ANALYTICS_ENABLED": "False"}
    for name, value in (env or {}).items():
        if value is None:
            child_env.pop(name, None)
        else:
            child_env[name] = value
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
