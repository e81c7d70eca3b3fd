"""A build split into user parts (issue 15) gives the snapshot of the local one-part build:
the same rows and values -- in fact byte-identical files -- whatever order or process the
parts run in, with or without a cut-off."""

from __future__ import annotations

import multiprocessing
import random
from concurrent.futures import ProcessPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pandas as pd
import pytest

import features.parts as parts_module
from features.parts import build_folder
from features.registry import REGISTRY
from features.snapshot import Manifest, build_views
from features.sources import sources_from_store
from ingest.raw_store import commit_batch
from recsys.partitions import part_memory_limit, partition_of

JAN = datetime(2024, 1, 1, tzinfo=UTC)
FEB = datetime(2024, 2, 1, tzinfo=UTC)
MAR = datetime(2024, 3, 1, tzinfo=UTC)


@pytest.fixture
def store(make_batch, tmp_path: Path) -> Path:
    """Two monthly batches and a third overlapping both (event identity applies)."""
    root = tmp_path / "store"
    for name, seed, start, end in (("jan", 1, JAN, FEB), ("feb", 2, FEB, MAR),
                                   ("late", 3, JAN + timedelta(days=20), MAR)):
        commit_batch(make_batch(name, seed=seed, n=600, start=start, end=end, n_users=40,
                                n_items=25), raw_root=root)
    return root


def shuffled_map(label, fn, args_list):
    """Runs the parts in a random order (results in the caller's order, as a mapper must)."""
    order = list(range(len(args_list)))
    random.Random(7).shuffle(order)
    results = {i: fn(*args_list[i]) for i in reversed(order)}
    return [results[i] for i in range(len(args_list))]


def process_pool_map(label, fn, args_list):
    """Each part in another process (fresh interpreters: the function travels by reference)."""
    with ProcessPoolExecutor(max_workers=2,
                             mp_context=multiprocessing.get_context("spawn")) as pool:
        return list(pool.map(fn, *zip(*args_list, strict=True)))


def _build(store: Path, root: Path, cut: datetime | None, **kwargs) -> Manifest:
    return build_views(sources_from_store(store, cut), features_root=root, snapshot_id="s",
                       as_of=cut, **kwargs)


@pytest.mark.parametrize("cut", [None, FEB + timedelta(days=3, hours=7)])
def test_three_parts_out_of_order_give_the_local_snapshot(store, tmp_path, cut):
    local = _build(store, tmp_path / "local", cut)
    parts = _build(store, tmp_path / "parts", cut, partitions=3, mapper=shuffled_map)
    users = pd.read_parquet(local.view_path("user_features"))["user_id"]
    assert len(set(partition_of(users, 3))) == 3  # every part holds users
    assert local.partitions == 1 and parts.partitions == 3
    assert local.as_of == parts.as_of
    for view in REGISTRY:
        a, b = local.views[view], parts.views[view]
        assert a.rows == b.rows > 0
        assert a.schema == b.schema
        pd.testing.assert_frame_equal(pd.read_parquet(a.path), pd.read_parquet(b.path))
        assert a.sha256 == b.sha256  # byte-identical (`features.parts.write_ordered`)
    assert not build_folder(tmp_path / "parts", "s").exists()  # part files are cleaned up
    if cut is not None:  # the point-in-time rule holds in every part
        inter = pd.read_parquet(parts.view_path("interactions"))
        assert inter["last_ts"].max() <= cut


def test_parts_in_a_process_pool_give_the_local_snapshot(store, tmp_path):
    local = _build(store, tmp_path / "local", None)
    pooled = _build(store, tmp_path / "pool", None, partitions=3, mapper=process_pool_map)
    serial = _build(store, tmp_path / "serial", None, partitions=3)
    for view in REGISTRY:
        pd.testing.assert_frame_equal(pd.read_parquet(local.view_path(view)),
                                      pd.read_parquet(pooled.view_path(view)))
        assert pooled.views[view].sha256 == serial.views[view].sha256 == \
            local.views[view].sha256


def test_item_statistics_merge_across_parts(store, tmp_path):
    """Item counts and rating statistics add up over parts exactly as a recomputation."""
    manifest = _build(store, tmp_path / "f", None, partitions=4)
    events = pd.concat(pd.read_parquet(p) for p in
                       sorted(store.glob("interactions/*/*.parquet")))
    events = events.drop_duplicates(["user_id", "item_id", "timestamp", "event_type"])
    items = pd.read_parquet(manifest.view_path("item_features")).set_index("item_id")
    expected = events.groupby("item_id").agg(n=("user_id", "size"),
                                             users=("user_id", "nunique"),
                                             mean=("rating", "mean"), std=("rating", "std"))
    got = items.loc[expected.index]
    assert got["n_interactions"].tolist() == expected["n"].tolist()
    assert got["n_users"].tolist() == expected["users"].tolist()
    assert got["mean_rating"].tolist() == pytest.approx(expected["mean"].tolist(), rel=1e-6)
    assert got["rating_std"].tolist() == pytest.approx(expected["std"].tolist(), rel=1e-5)


def test_a_retried_part_replaces_its_own_files(store, tmp_path):
    """A part run twice (a retry after a lost worker) leaves one set of files, same result."""
    def twice(label, fn, args_list):
        for args in args_list:
            fn(*args)
        return [fn(*args) for args in args_list]

    once = _build(store, tmp_path / "once", None, partitions=2)
    again = _build(store, tmp_path / "again", None, partitions=2, mapper=twice)
    assert {v: m.sha256 for v, m in once.views.items()} == \
        {v: m.sha256 for v, m in again.views.items()}


def test_parts_on_dask_workers_keep_duckdb_within_the_workers_memory(store, tmp_path,
                                                                      monkeypatch):
    """On a Dask worker a part's DuckDB gets half the worker's memory limit (DuckDB's own
    default, 80 % of the host in every process, would let parts on one host's workers claim
    several times its memory); nothing of the parts stays behind."""
    import dask
    from distributed import Client, LocalCluster

    limits: list[str | None] = []
    real_connect = parts_module.connect

    def recording(**kwargs):
        limits.append(kwargs.get("memory_limit"))
        return real_connect(**kwargs)

    monkeypatch.setattr(parts_module, "connect", recording)
    local = _build(store, tmp_path / "local", None)
    assert limits == [None]  # the local build keeps DuckDB's default
    # in-process workers measure this whole (test) process: no pausing or spilling on it
    no_memory_policy = {f"distributed.worker.memory.{key}": False
                        for key in ("target", "spill", "pause", "terminate")}
    with dask.config.set(no_memory_policy), \
            LocalCluster(n_workers=2, threads_per_worker=1, processes=False,
                         memory_limit="512MiB", dashboard_address=None) as cluster, \
            Client(cluster) as client:
        def dask_map(label, fn, args_list):
            return client.gather([client.submit(fn, *args, pure=False) for args in args_list])

        on_dask = _build(store, tmp_path / "dask", None, partitions=3, mapper=dask_map)
    assert limits[1:] == ["256MiB"] * 3  # one connection per part
    assert {v: m.sha256 for v, m in on_dask.views.items()} == \
        {v: m.sha256 for v, m in local.views.items()}
    assert not build_folder(tmp_path / "dask", "s").exists()


def test_part_memory_limit_outside_a_worker():
    assert part_memory_limit("2GB") == "2GB"  # a configured limit wins anywhere
    assert part_memory_limit(None) is None  # here: DuckDB's default
