"""MongoDB clients and the names of every collection of both stores.

The serving store (`serving/store.py`) and the online feature store (`features/online.py`) own
their collections; this module only says how they are named, so no other module spells a
collection name, and how a client is made, so every client reads datetimes back as aware UTC.

Serving store: ``model_versions`` (one document per version), ``serving_state`` (the ``active``
pointer and the ``publish_lock`` lease) and per version ``recs_<v>``, ``similar_<v>``,
``popular_<v>``, ``user_embeddings_<v>``, ``item_embeddings_<v>``.

Online feature store: ``feature_snapshots`` (one document per materialized snapshot),
``feature_state`` (the ``online`` pointer) and per snapshot ``user_features_<s>`` and
``item_features_<s>``.

Against a sharded cluster (the client talks to a mongos, `is_mongos`) the per-version and
per-snapshot collections are sharded on hashed ``_id`` when they are created
(`shard_collections`, called by `recsys.versions`); against a single node or a replica set
nothing differs.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC
from typing import Any

from bson.codec_options import CodecOptions
from pymongo import AsyncMongoClient, MongoClient
from pymongo.database import Database

from recsys.ids import check_id
from recsys.settings import Settings

CODEC_OPTIONS: CodecOptions = CodecOptions(tz_aware=True, tzinfo=UTC)

# ---------------------------------------------------------------- serving store

MODEL_VERSIONS = "model_versions"
SERVING_STATE = "serving_state"
ACTIVE_POINTER_ID = "active"
"""`serving_state` document naming the served model version."""
PUBLISH_LOCK_ID = "publish_lock"
"""`serving_state` document holding the publish lease (`serving/lock.py`)."""
POPULAR_ID = "popular"
"""The one document of a `popular_<version>` collection."""
SERVING_KINDS = ("recs", "similar", "popular", "user_embeddings", "item_embeddings")

# ---------------------------------------------------------------- online feature store

FEATURE_SNAPSHOTS = "feature_snapshots"
FEATURE_STATE = "feature_state"
ONLINE_POINTER_ID = "online"
"""`feature_state` document naming the online feature snapshot."""
FEATURE_ENTITIES = {"users": "user_features", "items": "item_features"}
"""entity -> collection prefix (also the name of the snapshot view it is copied from)."""


def serving_collection(kind: str, version: str) -> str:
    """The collection of one kind of serving document of `version` (see `SERVING_KINDS`)."""
    if kind not in SERVING_KINDS:
        raise ValueError(f"unknown serving collection kind {kind!r}; expected {SERVING_KINDS}")
    return f"{kind}_{check_id(version, kind='model version')}"


def recs_collection(version: str) -> str:
    return serving_collection("recs", version)


def similar_collection(version: str) -> str:
    return serving_collection("similar", version)


def popular_collection(version: str) -> str:
    return serving_collection("popular", version)


def user_embeddings_collection(version: str) -> str:
    return serving_collection("user_embeddings", version)


def item_embeddings_collection(version: str) -> str:
    return serving_collection("item_embeddings", version)


def serving_collections(version: str) -> list[str]:
    """Every collection that belongs to model version `version`."""
    return [serving_collection(kind, version) for kind in SERVING_KINDS]


def feature_collection(entity: str, snapshot_id: str) -> str:
    """The online collection of an entity's features ("users" or "items") for a snapshot."""
    if entity not in FEATURE_ENTITIES:
        raise ValueError(f"unknown entity {entity!r}; expected 'users' or 'items'")
    return f"{FEATURE_ENTITIES[entity]}_{check_id(snapshot_id, kind='snapshot id')}"


def feature_collections(snapshot_id: str) -> list[str]:
    """Every collection that belongs to materialized snapshot `snapshot_id`."""
    return [feature_collection(entity, snapshot_id) for entity in FEATURE_ENTITIES]


# ---------------------------------------------------------------- sharded clusters

MONGOS_HELLO_MSG = "isdbgrid"
"""What a mongos (the router of a sharded cluster) answers in the ``msg`` field of `hello`."""
SHARD_KEY = {"_id": "hashed"}
"""The shard key of every versioned collection: all reads and writes are by ``_id``, and a
hashed key spreads the writers of a publish over every shard from the first document."""


def is_mongos(db: Database) -> bool:
    """True when `db`'s client talks to a mongos (a sharded cluster), from its `hello` reply."""
    return db.client.admin.command("hello").get("msg") == MONGOS_HELLO_MSG


def shard_collections(db: Database, names: list[str]) -> None:
    """Shard the (new, empty) collections `names` of `db` on hashed ``_id``; call it only
    against a mongos (`is_mongos`).

    Sends ``enableSharding`` for the database (a no-op when it is already enabled), then one
    ``shardCollection`` per collection; MongoDB creates the hashed ``_id`` index itself.
    """
    admin = db.client.admin
    admin.command("enableSharding", db.name)
    for name in names:
        admin.command("shardCollection", f"{db.name}.{name}", key=SHARD_KEY)


# ---------------------------------------------------------------- clients

BATCH_CONNECT_TIMEOUT_MS = 60_000
"""Connect (and heartbeat) timeout of batch clients; see `client_for`."""

def mongo_client(settings: Settings, *, operation_timeout_ms: int | None = None) -> MongoClient:
    """A sync client for batch code (flows, CLI, admin calls); the caller closes it.

    Args:
        settings: `mongodb_uri` and `mongodb_timeout_ms` (server selection and connect).
        operation_timeout_ms: a deadline for every operation (pymongo's `timeoutMS`); None for
            none, as a publish writes for minutes.
    """
    return client_for(settings.mongodb_uri, timeout_ms=settings.mongodb_timeout_ms,
                      operation_timeout_ms=operation_timeout_ms)


def client_for(uri: str, *, timeout_ms: int, operation_timeout_ms: int | None = None
               ) -> MongoClient:
    """`mongo_client` from plain values, for part functions that run in other processes.

    `timeout_ms` bounds server selection only. pymongo also uses connectTimeoutMS as the socket
    timeout of its heartbeats, and a heartbeat that times out cancels the client's in-flight
    operations: a server busy for a few seconds with a large insert would cancel the publish
    itself. Batch clients therefore keep a generous connect timeout.
    """
    options: dict[str, Any] = {"serverSelectionTimeoutMS": timeout_ms,
                               "connectTimeoutMS": max(timeout_ms, BATCH_CONNECT_TIMEOUT_MS)}
    if operation_timeout_ms is not None:
        options["timeoutMS"] = operation_timeout_ms
    return MongoClient(uri, tz_aware=True, tzinfo=UTC, **options)


def async_mongo_client(settings: Settings) -> AsyncMongoClient:
    """The API's client: pooled (`mongodb_max_pool_size`), every operation with a deadline.

    Make it once per worker process (in the FastAPI lifespan), never before a fork.
    """
    timeout = settings.mongodb_timeout_ms
    return AsyncMongoClient(
        settings.mongodb_uri,
        maxPoolSize=settings.mongodb_max_pool_size,
        serverSelectionTimeoutMS=timeout,
        connectTimeoutMS=timeout,
        timeoutMS=timeout,
        tz_aware=True,
        tzinfo=UTC,
    )


@contextmanager
def open_database(settings: Settings) -> Iterator[Database]:
    """`with open_database(settings) as db:` on `settings.mongodb_db`; closes the client after."""
    client = mongo_client(settings)
    try:
        yield client.get_database(settings.mongodb_db, codec_options=CODEC_OPTIONS)
    finally:
        client.close()
