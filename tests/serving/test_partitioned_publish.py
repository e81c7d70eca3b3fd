"""The partitioned publish (`serving/version_writer.py` under `publish_model`): user partitions
written by parallel, unordered, idempotent parts, verified, then switched once; against a real
secantusd-py server and a real model registry (one small trained model, scored as 1 and as 3
user partitions)."""

from __future__ import annotations

import multiprocessing
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from pymongo import MongoClient
from pymongo.database import Database

from features.snapshot import Manifest, build_snapshot
from recsys.errors import PublishError
from recsys.mongo import MODEL_VERSIONS, SERVING_KINDS, serving_collection
from recsys.partitions import partition_of
from recsys.settings import Settings
from recsys.versions import STATUS_BUILDING, VersionedCollections
from serving import version_writer
from serving.publish import publish_model
from serving.store import MongoServingStore
from serving.version_writer import write_payload_version, write_user_part
from tests.features.conftest import random_batch
from tests.serving.payloads import make_payload
from training.registry import load_model, score_partitions
from training.stage import score_run_model, train_run_model

pytestmark = pytest.mark.integration

MODEL_SETTINGS = {"top_n": 5, "similar_n": 3, "popular_n": 5, "eval_k": 3, "explain_n": 2,
                  "factors": 2, "regularization": 0.1, "alpha": 5.0, "iterations": 3, "seed": 3}
VERSION = "v1"


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, Manifest]:
    """(data dir, model dir, manifest) of model v1 on snapshot s1, not scored yet."""
    root = tmp_path_factory.mktemp("data")
    settings = Settings(data_dir=root, **MODEL_SETTINGS)
    raw = random_batch(root / "raw" / "s1", seed=5, n=600, n_users=40, n_items=25,
                       start=datetime(2024, 1, 1, tzinfo=UTC),
                       end=datetime(2024, 3, 1, tzinfo=UTC))
    manifest = build_snapshot(raw, features_root=settings.features_dir, snapshot_id="s1")
    model_dir, _ = train_run_model(manifest, version=VERSION, settings=settings)
    return root, model_dir, manifest


def _settings(data_dir: Path, mongo_uri: str, db_name: str, partitions: int) -> Settings:
    return Settings(data_dir=data_dir, mongodb_uri=mongo_uri, mongodb_db=db_name,
                    partitions=partitions, publish_batch_size=7, keep_versions=2,
                    **MODEL_SETTINGS)


@pytest.fixture
def databases(mongo_client: MongoClient, db_name: str) -> Iterator[list[str]]:
    """Two fresh database names (dropped after the test)."""
    names = [f"{db_name}_a", f"{db_name}_b"]
    yield names
    for name in names:
        mongo_client.drop_database(name)


def _score(trained: tuple[Path, Path, Manifest], settings: Settings) -> None:
    _, model_dir, manifest = trained
    score_run_model(model_dir, manifest, settings=settings)
    assert score_partitions(model_dir) == settings.partition_count


def _in_processes(order: Callable[[list[int]], list[int]]) -> Any:
    """A mapper running the parts in a process pool, submitted in the order `order` gives."""

    def mapper(label: str, fn: Callable[..., Any], args_list: Sequence[tuple[Any, ...]]
               ) -> list[Any]:
        context = multiprocessing.get_context("spawn")  # no fork of a threaded test process
        with ProcessPoolExecutor(max_workers=2, mp_context=context) as pool:
            futures = {i: pool.submit(fn, *args_list[i])
                       for i in order(list(range(len(args_list))))}
            return [futures[i].result() for i in range(len(args_list))]

    return mapper


def _served(db: Database) -> dict[str, Any]:
    """Every serving document of VERSION (without the publish time) and its version facts."""
    out: dict[str, Any] = {}
    for kind in SERVING_KINDS:
        docs = list(db[serving_collection(kind, VERSION)].find({}).sort("_id", 1))
        for doc in docs:
            doc.pop("generated_at", None)
        out[kind] = docs
    version = db[MODEL_VERSIONS].find_one({"_id": VERSION})
    # (the metadata differs: it records how the scores were partitioned)
    out["version"] = {key: version[key] for key in
                      ("status", "counts", "features", "recommendations")}
    return out


def test_three_partitions_in_a_process_pool_serve_what_one_part_serves(
    trained: tuple[Path, Path, Manifest], mongo_uri: str, mongo_client: MongoClient,
    databases: list[str]
) -> None:
    data_dir, model_dir, _ = trained
    one = _settings(data_dir, mongo_uri, databases[0], partitions=1)
    _score(trained, one)
    assert publish_model(one, VERSION).counts["users"] == 40

    three = _settings(data_dir, mongo_uri, databases[1], partitions=3)
    _score(trained, three)
    result = publish_model(three, VERSION, mapper=_in_processes(lambda parts: parts[::-1]))
    assert result.written and result.counts["users"] == 40

    a, b = _served(mongo_client[databases[0]]), _served(mongo_client[databases[1]])
    assert a["recs"] and a["recs"][0]["items"][0]["because"]  # explanations are published
    assert "genres" in a["recs"][0]["items"][0]  # and the snapshot's item attributes
    assert a == b
    for name in databases:
        assert MongoServingStore(mongo_client[name]).active_version() == VERSION


def test_a_part_run_again_after_its_worker_died_adds_nothing_twice(
    trained: tuple[Path, Path, Manifest], mongo_uri: str, mongo_client: MongoClient,
    databases: list[str]
) -> None:
    data_dir, model_dir, _ = trained
    settings = _settings(data_dir, mongo_uri, databases[0], partitions=3)
    _score(trained, settings)
    _, user_ids, _, _ = load_model(model_dir)
    db = mongo_client[databases[0]]
    attempts: list[list[dict[str, Any]]] = []

    def retrying(label: str, fn: Callable[..., Any], args_list: Sequence[tuple[Any, ...]]
                 ) -> list[Any]:
        results = []
        for args in args_list:
            first = fn(*args)  # the first attempt wrote everything, then "its worker died"
            again = fn(*args)  # Dask runs it again: everything is there already
            part_users = user_ids[partition_of(user_ids, 3) == args[6]].tolist()
            # ... and an attempt that died half-way: some of its documents are missing
            for kind in ("recs", "user_embeddings"):
                db[serving_collection(kind, VERSION)].delete_many(
                    {"_id": {"$in": part_users[::2]}})
            last = fn(*args)
            attempts.append([first, again, last])
            results.append(last)
        return results

    result = publish_model(settings, VERSION, mapper=retrying)
    assert result.counts["users"] == 40
    for kind in ("recs", "user_embeddings"):
        ids = [d["_id"] for d in db[serving_collection(kind, VERSION)].find({}, {"_id": 1})]
        assert sorted(ids) == sorted(user_ids.tolist())  # every user exactly once
    for first, again, last in attempts:
        n = first["users"]
        assert first["inserted"] == first["written"] == {"recs": n, "user_embeddings": n}
        assert again["inserted"] == {"recs": 0, "user_embeddings": 0}
        assert again["written"] == first["written"]
        assert last["inserted"] == {"recs": (n + 1) // 2, "user_embeddings": (n + 1) // 2}
        assert last["written"] == first["written"]

    # a late retry of a version that is no longer being written writes nothing
    db.drop_collection(serving_collection("recs", VERSION))
    db[MODEL_VERSIONS].delete_one({"_id": VERSION})
    args = (mongo_uri, databases[0], 5000, VERSION, str(model_dir),
            str(settings.features_dir), 1, 3, 7, datetime(2024, 1, 1, tzinfo=UTC), "attempt")
    with pytest.raises(PublishError, match="is gone, not being written"):
        write_user_part(*args)
    assert serving_collection("recs", VERSION) not in db.list_collection_names()


def test_a_late_part_of_a_failed_attempt_writes_nothing_into_the_retried_version(
    trained: tuple[Path, Path, Manifest], mongo_uri: str, mongo_client: MongoClient,
    databases: list[str]
) -> None:
    data_dir, _, _ = trained
    settings = _settings(data_dir, mongo_uri, databases[0], partitions=3)
    _score(trained, settings)
    db = mongo_client[databases[0]]
    store = MongoServingStore(db)
    stale: list[tuple[Any, ...]] = []

    def failing(label: str, fn: Callable[..., Any], args_list: Sequence[tuple[Any, ...]]
                ) -> list[Any]:
        stale.extend(args_list)  # its parts are "still running somewhere" when it fails
        raise PublishError("the first attempt failed")

    with pytest.raises(PublishError, match="first attempt failed"):
        publish_model(settings, VERSION, mapper=failing)

    refused: list[str] = []

    def retried(label: str, fn: Callable[..., Any], args_list: Sequence[tuple[Any, ...]]
                ) -> list[Any]:
        # a late part of the failed attempt starts after the retry began: it stops before
        # writing anything into the retry's version
        with pytest.raises(PublishError, match="under another publish attempt") as error:
            fn(*stale[0])
        refused.append(str(error.value))
        assert db[serving_collection("recs", VERSION)].count_documents({}) == 0
        return [fn(*args) for args in args_list]

    first_generated_at = store.get_version(VERSION)["generated_at"]
    result = publish_model(settings, VERSION, mapper=retried)
    assert result.counts["users"] == 40 and len(refused) == 1
    generated_at = store.get_version(VERSION)["generated_at"]
    # the retry kept the unfinished attempt's time: a batch of a late part that landed before
    # it stopped would hold the very documents the retry writes
    assert generated_at == first_generated_at
    recs = db[serving_collection("recs", VERSION)]  # every recommendation list is the retry's
    assert recs.count_documents({"generated_at": generated_at}) == 40


def test_a_retry_after_a_cleanup_keeps_the_abandoned_attempts_time(
    trained: tuple[Path, Path, Manifest], mongo_uri: str, mongo_client: MongoClient,
    databases: list[str]
) -> None:
    """A publish of another version may clean the failed attempt up before the retry: the
    version is abandoned, not forgotten, so the retry still writes what a late batch of the
    failed attempt would (the same generated_at)."""
    data_dir, _, _ = trained
    settings = _settings(data_dir, mongo_uri, databases[0], partitions=2)
    _score(trained, settings)
    db = mongo_client[databases[0]]
    store = MongoServingStore(db)

    def failing(label: str, fn: Callable[..., Any], args_list: Sequence[tuple[Any, ...]]
                ) -> list[Any]:
        fn(*args_list[0])  # one part wrote, then the attempt failed
        raise PublishError("the first attempt failed")

    with pytest.raises(PublishError, match="first attempt failed"):
        publish_model(settings, VERSION, mapper=failing)
    first_generated_at = store.get_version(VERSION)["generated_at"]
    assert store.cleanup_incomplete() == [VERSION]  # as another version's publish would
    assert store.get_version(VERSION)["status"] == "abandoned"
    result = publish_model(settings, VERSION)
    assert result.counts["users"] == 40
    assert store.get_version(VERSION)["generated_at"] == first_generated_at
    recs = db[serving_collection("recs", VERSION)]
    assert recs.count_documents({"generated_at": first_generated_at}) == 40


def test_a_part_stops_between_batches_when_its_attempt_is_replaced(
    trained: tuple[Path, Path, Manifest], mongo_uri: str, mongo_client: MongoClient,
    databases: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    data_dir, _, _ = trained
    settings = _settings(data_dir, mongo_uri, databases[0], partitions=1)
    _score(trained, settings)
    db = mongo_client[databases[0]]
    real_insert = version_writer.insert_documents

    def replaced_after_one_batch(*args: Any, before_batch: Callable[[], None] | None = None,
                                 **kwargs: Any) -> tuple[int, int]:
        if before_batch is None:  # the item collections, written before the parts
            return real_insert(*args, **kwargs)
        calls = 0

        def check() -> None:
            nonlocal calls
            calls += 1
            if calls == 2:  # a retry of the publish begins while this part writes
                db[MODEL_VERSIONS].update_one({"_id": VERSION}, {"$set": {"attempt": "retry"}})
            before_batch()

        return real_insert(*args, before_batch=check, **kwargs)

    monkeypatch.setattr(version_writer, "insert_documents", replaced_after_one_batch)
    with pytest.raises(PublishError, match="under another publish attempt, not being written "
                                           "by this one: part 0 stops"):
        publish_model(settings, VERSION)
    # the part wrote its first batch (7 users), then stopped
    assert db[serving_collection("recs", VERSION)].count_documents({}) == 7


def test_the_version_is_switched_once_and_only_after_every_part_is_verified(
    trained: tuple[Path, Path, Manifest], mongo_uri: str, mongo_client: MongoClient,
    databases: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    data_dir, _, _ = trained
    settings = _settings(data_dir, mongo_uri, databases[0], partitions=3)
    _score(trained, settings)
    db = mongo_client[databases[0]]
    store = MongoServingStore(db)
    write_payload_version(store.db, make_payload("v0"))
    store.activate("v0")

    # a part fails: nothing is switched, the version stays building, the next publish cleans
    # it up and writes it completely
    def failing(label: str, fn: Callable[..., Any], args_list: Sequence[tuple[Any, ...]]
                ) -> list[Any]:
        fn(*args_list[0])
        raise PublishError("part 1 failed")

    with pytest.raises(PublishError, match="part 1 failed"):
        publish_model(settings, VERSION, mapper=failing)
    assert store.active_version() == "v0"
    assert store.get_version(VERSION)["status"] == STATUS_BUILDING

    switches: list[str] = []
    real_switch = VersionedCollections.switch

    def counting(self: VersionedCollections, version: str) -> str | None:
        if self.kind == "model version":
            switches.append(version)
        return real_switch(self, version)

    monkeypatch.setattr(VersionedCollections, "switch", counting)
    seen: list[tuple[str | None, str]] = []

    def watching(label: str, fn: Callable[..., Any], args_list: Sequence[tuple[Any, ...]]
                 ) -> list[Any]:
        results = []
        for args in args_list:  # while any part runs, v0 is served and v1 is building
            seen.append((store.active_version(), store.get_version(VERSION)["status"]))
            results.append(fn(*args))
        seen.append((store.active_version(), store.get_version(VERSION)["status"]))
        return results

    result = publish_model(settings, VERSION, mapper=watching)
    assert (result.version, result.previous_version) == (VERSION, "v0")
    assert seen == [("v0", STATUS_BUILDING)] * 4
    assert switches == [VERSION]
    assert store.get_version(VERSION)["status"] == "ready"


def test_parts_that_miss_a_partition_or_a_document_fail_verification(
    trained: tuple[Path, Path, Manifest], mongo_uri: str, mongo_client: MongoClient,
    databases: list[str]
) -> None:
    data_dir, _, _ = trained
    settings = _settings(data_dir, mongo_uri, databases[0], partitions=3)
    _score(trained, settings)

    def dropping(label: str, fn: Callable[..., Any], args_list: Sequence[tuple[Any, ...]]
                 ) -> list[Any]:
        return [fn(*args) for args in args_list[:-1]] + [
            {**fn(*args_list[-1]), "part": 0}]  # a mapper that mixed up its results

    with pytest.raises(PublishError, match=r"wrote partitions \[0, 0, 1\] holding"):
        publish_model(settings, VERSION, mapper=dropping)

    def losing(label: str, fn: Callable[..., Any], args_list: Sequence[tuple[Any, ...]]
               ) -> list[Any]:
        results = [fn(*args) for args in args_list]
        db = mongo_client[databases[0]]
        db[serving_collection("recs", VERSION)].delete_one({})  # a write lost after the part
        return results

    with pytest.raises(PublishError, match="holds 39 documents"):
        publish_model(settings, VERSION, mapper=losing)
    store = MongoServingStore(mongo_client[databases[0]])
    assert store.active_version() is None
    assert store.get_version(VERSION)["status"] == STATUS_BUILDING
