"""Shared fixtures: a real `secantusd-py` server on a free port and Prefect's test harness."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from recsys.mongo_server import EmbeddedMongo, free_port

REPO_ROOT = Path(__file__).resolve().parent.parent
MOVIELENS_DIR = REPO_ROOT.parent / "shared" / "datasets" / "ml-100k"


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
