"""A full disk at each stage of `recsys pipeline`.

The data dir lives on one small tmpfs and MongoDB's storage on another. Right before stage k
starts, a filler file takes every free byte of the disk that stage writes to: the data dir's
for validate, features, train and score, MongoDB's for publish. The run must end with one
`error:` line naming the stage, what is served must not change, and once the space is back the
next run completes. Run k fills the disk at stage k, so it also gets past whatever the earlier
failures left behind. Needs root for the tmpfs mounts; skipped otherwise.

MongoDB has a disk of its own because secantusd-py does not survive a full disk cleanly: it
answers "internal server error", and a table whose creation (or a background write) hit the
full disk stays unusable until the server restarts. The test restarts it after the publish
stage, as an operator would; README "Reliability" says so.
"""

from __future__ import annotations

import os
import re
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from recsys.mongo_server import EmbeddedMongo, free_port
from tests.faults.conftest import (
    BASELINE,
    STAGES,
    cli_env,
    kill_session,
    serve_baseline,
    served,
    start_cli,
)

pytestmark = [pytest.mark.faults, pytest.mark.integration, pytest.mark.slow]

NO_SPACE = ("No space left on device", "Errno 28")


def _mount_tmpfs(mount_point: Path, size: str) -> None:
    mount_point.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs",
                              str(mount_point)], capture_output=True, text=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.strip()}")


@pytest.fixture
def disks(tmp_path: Path) -> Iterator[dict[str, Path]]:
    """Two small tmpfs mounts: "data" (the data dir) and "mongo" (MongoDB's storage)."""
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    mounted: list[Path] = []
    try:
        for name, size in (("data", "96m"), ("mongo", "64m")):
            _mount_tmpfs(tmp_path / f"{name}-disk", size)
            mounted.append(tmp_path / f"{name}-disk")
        yield {"data": mounted[0], "mongo": mounted[1]}
    finally:
        for mount_point in mounted:
            subprocess.run(["umount", "-l", str(mount_point)], check=False)


@pytest.fixture
def disk_mongo(disks: dict[str, Path], tmp_path: Path) -> Iterator[EmbeddedMongo]:
    """A MongoDB whose storage is on the "mongo" disk (its log is not)."""
    server = EmbeddedMongo(state_dir=tmp_path / "mongo-state", port=free_port(),
                           storage_path=disks["mongo"] / "db")
    server.start()
    yield server
    server.stop()


def test_disk_full_at_each_stage_fails_in_one_line_and_a_rerun_completes(
    fault_batch: Path, disks: dict[str, Path], disk_mongo: EmbeddedMongo, prefect_home: Path,
    prefect_api: str, tmp_path: Path
) -> None:
    db, uri = f"disk_{uuid.uuid4().hex[:8]}", disk_mongo.uri
    serve_baseline(uri, db)
    before = served(uri, db)
    env = cli_env(mongo_uri=uri, db=db, data_dir=disks["data"] / "data",
                  prefect_home=prefect_home, prefect_api=prefect_api)
    args = ["pipeline", "--input", str(fault_batch)]

    for stage in STAGES:
        filler = disks["mongo" if stage == "publish" else "data"] / "filler"
        run = start_cli(args, env, tmp_path / f"full-{stage}.log",
                        fault=f"{stage}:disk-full:{filler}")
        try:
            code = run.wait()
        finally:
            filler.unlink(missing_ok=True)
            kill_session(run.pid)
        output = run.output()
        assert f"FAULT: disk full before {stage}" in output
        assert code == 1, output[-3000:]
        errors = run.error_lines()
        assert len(errors) == 1, output[-3000:]
        assert re.match(rf"error: pipeline failed after [\d.]+s: stage '{stage}' failed: ",
                        errors[0]), errors[0]
        if stage == "publish":  # MongoDB's full disk: "internal server error"; restart it
            disk_mongo.stop()
            disk_mongo.start()
        else:
            assert any(text in errors[0] for text in NO_SPACE), errors[0]
        assert served(uri, db) == before, f"served changed after a full disk at {stage}"

    rerun = start_cli(args, env, tmp_path / "rerun.log")
    try:
        assert rerun.wait() == 0, rerun.output()[-5000:]
    finally:
        kill_session(rerun.pid)
    published = re.search(r"published and activated model version (\S+) in", rerun.output())
    assert published, rerun.output()[-3000:]
    after = served(uri, db)
    assert after == {"version": published.group(1), "users": 200}
    assert after["version"] != BASELINE
