"""Sharded MongoDB: detecting a mongos from `hello`, and the commands that shard a version's
collections on hashed `_id`.

A mongos cannot run here, so the mongos side is checked against a recorder of the commands the
code sends (a test double of the admin database; every answer it gives is the documented reply
shape); the single-node side runs against the real secantusd-py server.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from pymongo import MongoClient, monitoring
from pymongo.database import Database

from recsys.errors import PublishError
from recsys.mongo import (
    MODEL_VERSIONS,
    SERVING_STATE,
    is_mongos,
    serving_collections,
)
from recsys.versions import VersionedCollections, create_version_collections
from serving.store import MongoServingStore, serving_versions
from serving.version_writer import write_payload_version
from tests.serving.payloads import make_payload

# `hello` replies as documented: a mongos says msg "isdbgrid"; a standalone mongod and a
# replica-set member do not
MONGOS_HELLO = {"isWritablePrimary": True, "msg": "isdbgrid", "maxWireVersion": 25, "ok": 1.0}
STANDALONE_HELLO = {"isWritablePrimary": True, "maxWireVersion": 25, "ok": 1.0}
REPLICA_SET_HELLO = {"isWritablePrimary": True, "setName": "rs0", "hosts": ["a:27017"],
                     "maxWireVersion": 25, "ok": 1.0}


class RecordingAdmin:
    """Records `command` calls; answers `hello` with the given reply and the rest with ok."""

    def __init__(self, hello: dict[str, Any]) -> None:
        self.hello = hello
        self.commands: list[tuple[Any, ...]] = []

    def command(self, command: str, value: Any = 1, **kwargs: Any) -> dict[str, Any]:
        self.commands.append((command, value, kwargs) if kwargs or value != 1 else (command,))
        return self.hello if command == "hello" else {"ok": 1.0}


class RecordingDatabase:
    """The parts of a pymongo `Database` that creating versioned collections uses."""

    def __init__(self, name: str, hello: dict[str, Any]) -> None:
        self.name = name
        self.admin = RecordingAdmin(hello)
        self.client = self  # `db.client.admin`
        self.calls: list[tuple[str, str]] = []

    def drop_collection(self, name: str) -> None:
        self.calls.append(("drop", name))

    def create_collection(self, name: str) -> None:
        self.calls.append(("create", name))

    def with_options(self, **_: Any) -> RecordingDatabase:
        return self

    def __getitem__(self, name: str) -> Any:
        return None  # never used by the code under test


@pytest.mark.parametrize(("hello", "expected"), [
    (MONGOS_HELLO, True), (STANDALONE_HELLO, False), (REPLICA_SET_HELLO, False),
    ({**STANDALONE_HELLO, "msg": "something else"}, False),
])
def test_a_mongos_is_recognised_from_its_hello_reply(hello: dict[str, Any],
                                                      expected: bool) -> None:
    db = RecordingDatabase("recsys", hello)
    assert is_mongos(db) is expected  # type: ignore[arg-type]
    assert db.admin.commands == [("hello",)]


def test_against_a_mongos_every_new_collection_is_sharded_on_hashed_id() -> None:
    db = RecordingDatabase("recsys", MONGOS_HELLO)
    names = serving_collections("v7")
    create_version_collections(db, names, sharded=True)  # type: ignore[arg-type]
    assert db.calls == [call for name in names for call in (("drop", name), ("create", name))]
    assert db.admin.commands == [
        ("enableSharding", "recsys", {}),
        *[("shardCollection", f"recsys.{name}", {"key": {"_id": "hashed"}}) for name in names],
    ]


def test_against_a_single_node_nothing_is_sharded() -> None:
    db = RecordingDatabase("recsys", STANDALONE_HELLO)
    create_version_collections(db, ["recs_v1"], sharded=False)  # type: ignore[arg-type]
    assert db.calls == [("drop", "recs_v1"), ("create", "recs_v1")]
    assert db.admin.commands == []


@pytest.mark.parametrize(("hello", "sharded"), [(MONGOS_HELLO, True),
                                                (REPLICA_SET_HELLO, False)])
def test_versioned_collections_ask_hello_once(hello: dict[str, Any], sharded: bool) -> None:
    db = RecordingDatabase("recsys", hello)
    versions = VersionedCollections(
        db, registry=MODEL_VERSIONS, pointer=SERVING_STATE,  # type: ignore[arg-type]
        pointer_id="active", pointer_field="version", collections=serving_collections,
        kind="model version", error=PublishError)
    assert versions.sharded is sharded and versions.sharded is sharded
    assert db.admin.commands == [("hello",)]


# --------------------------------------------------------------------------- a real single node

class CommandNames(monitoring.CommandListener):
    """The names of the commands a client sent, in order."""

    def __init__(self) -> None:
        self.names: list[str] = []

    def started(self, event: monitoring.CommandStartedEvent) -> None:
        self.names.append(event.command_name)

    def succeeded(self, event: monitoring.CommandSucceededEvent) -> None:
        pass

    def failed(self, event: monitoring.CommandFailedEvent) -> None:
        pass


@pytest.fixture
def watched(mongo_uri: str) -> Iterator[tuple[Database, CommandNames]]:
    listener = CommandNames()
    client: MongoClient = MongoClient(mongo_uri, tz_aware=True, event_listeners=[listener])
    name = f"test_sharding_{uuid.uuid4().hex[:12]}"
    try:
        yield client[name], listener
    finally:
        client.drop_database(name)
        client.close()


@pytest.mark.integration
def test_publishing_to_a_single_node_sends_no_sharding_command(
        watched: tuple[Database, CommandNames]) -> None:
    db, listener = watched
    assert is_mongos(db) is False
    store = MongoServingStore(db)
    write_payload_version(store.db, make_payload("v1"))
    store.activate("v1")
    assert serving_versions(db).sharded is False
    assert "hello" in listener.names  # the question was asked ...
    assert not {"enableSharding", "shardCollection"} & set(listener.names)  # ... and answered
    assert set(serving_collections("v1")) <= set(db.list_collection_names())
    for name in serving_collections("v1"):  # plain collections: only the _id index
        assert [ix["key"] for ix in db[name].list_indexes()] == [{"_id": 1}]
