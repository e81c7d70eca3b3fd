"""Fixtures for the serving tests: a fresh database per test on the session's `mongo_uri` server."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from pymongo import MongoClient
from pymongo.database import Database

from serving.store import MongoServingStore
from tests.serving.failpoints import failpoint_server as start_failpoint_server


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(scope="session")
def mongo_client(mongo_uri: str) -> Iterator[MongoClient]:
    client = MongoClient(mongo_uri, serverSelectionTimeoutMS=5000, tz_aware=True)
    yield client
    client.close()


@pytest.fixture
def db_name() -> str:
    return f"test_serving_{uuid.uuid4().hex[:12]}"


@pytest.fixture
def db(mongo_client: MongoClient, db_name: str) -> Iterator[Database]:
    yield mongo_client[db_name]
    mongo_client.drop_database(db_name)


@pytest.fixture
def store(db: Database) -> MongoServingStore:
    return MongoServingStore(db)


@pytest.fixture
def failpoint_server(tmp_path: Path) -> Iterator[str]:
    """URI of a server of this test's own that accepts `configureFailPoint`."""
    with start_failpoint_server(tmp_path) as uri:
        yield uri
