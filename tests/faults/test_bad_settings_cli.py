"""Regression (issue 13): invalid settings ended `recsys pipeline` with Python tracebacks.

The flow read the settings only once it ran, inside Prefect, after starting a Prefect server: a
`RECSYS_GATE_MARGIN=-1` gave a 50 s wait and two tracebacks. The CLI now reads them first and
prints one line naming the variable, its value and the rule.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.faults.conftest import REPO

pytestmark = pytest.mark.faults


@pytest.mark.parametrize(("variable", "value", "args", "rule"), [
    ("RECSYS_GATE_MARGIN", "-1", ["pipeline", "--input", "batch"],
     "greater than or equal to 0"),
    ("RECSYS_API_RATE_LIMIT_BURST", "abc", ["serve", "--port", "1"], "valid integer"),
])
def test_an_invalid_setting_is_one_line_naming_the_variable(
    variable: str, value: str, args: list[str], rule: str, tmp_path: Path
) -> None:
    env = {key: val for key, val in os.environ.items() if not key.startswith("RECSYS_")}
    env.update({variable: value, "RECSYS_DATA_DIR": str(tmp_path / "data")})
    env.pop("PREFECT_API_URL", None)  # nothing may be started before the settings are read
    proc = subprocess.run([sys.executable, "-m", "recsys", *args], cwd=REPO, env=env,  # noqa: S603
                          capture_output=True, text=True, timeout=120)
    output = proc.stdout + proc.stderr
    assert proc.returncode == 1, output
    assert "Traceback" not in output and "Prefect" not in output  # nothing started or ran
    lines = output.strip().splitlines()
    assert len(lines) == 1, output
    assert lines[0].startswith(f"error: invalid settings: {variable}={value}: "), output
    assert rule in lines[0]
