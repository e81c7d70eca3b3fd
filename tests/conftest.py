"""Shared fixtures: a real `secantusd-py` server on a free port and Prefect's test harness."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from recsys.mongo_server import EmbeddedMongo, free_port

REPO_ROOT = Path(__file__).resolve().parent.parent
MOVIELENS_DIR = REPO_ROOT.parent / "shared" / "datasets" / "ml-100k"

# The default suite's longest files (seconds of setup + calls on 2 cores, measured with
# `--durations=0` on 2026-12-02; they vary with the machine's load), longest first. `make test`
# hands whole files to its two processes in collection order (`--dist loadfile
# --no-loadscope-reorder`); starting with these lets both processes finish together instead of
# one running a long file alone at the end.
LONGEST_FILES = (
    "tests/ingest/test_broken_batches.py",  # ~55 s: Prefect's test server, a published version
    "tests/flows/test_schedules.py",  # ~50 s: a real `prefect server start`
    "tests/flows/test_run_display.py",  # ~45 s: Prefect's test server and three flow runs
    "tests/flows/test_dask_runner.py",  # ~40 s: a local and a LocalCluster pipeline
    "tests/test_end_to_end.py",  # ~40 s
    "tests/serving/test_restore_safety.py",
    "tests/ingest/test_chunked_validation.py",
    "tests/ingest/test_stage.py",
    "tests/features/test_partitioned_build.py",
    "tests/serving/test_resilience.py",
    "tests/serving/test_publish.py",
    "tests/ingest/test_sql_validation.py",
)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """The `LONGEST_FILES` first, longest first; every other file after them in its own order."""
    rank = {path: position for position, path in enumerate(LONGEST_FILES)}
    items.sort(key=lambda item: rank.get(item.nodeid.partition("::")[0], len(rank)))


@pytest.fixture(scope="session")
def mongo_uri(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """URI of a real MongoDB-wire server (secantusd-py) started for this test session."""
    state_dir = tmp_path_factory.mktemp("mongo")
    server = EmbeddedMongo(state_dir=state_dir, port=free_port(), storage_path=state_dir / "db")
    state = server.start()
    yield state.uri
    server.stop()


@pytest.fixture
def mongo_db_name() -> str:
    """A fresh database name per test, so tests never see each other's data."""
    return f"test_{uuid.uuid4().hex[:12]}"


@pytest.fixture(scope="session")
def prefect_harness() -> Iterator[None]:
    """Prefect's own test harness (temporary database), started once per session."""
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=120):
        yield


@pytest.fixture(scope="session")
def movielens_dir() -> Path:
    if not (MOVIELENS_DIR / "u.data").exists():
        pytest.skip(f"MovieLens 100K not found at {MOVIELENS_DIR}")
    return MOVIELENS_DIR
