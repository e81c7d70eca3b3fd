"""A small catalogue with known answers: a real feature snapshot (titles, genres, history)
materialized online, and two published versions of a model over the same users and items.

Users u0..u5, items i0..i9 (genres `payloads.item_genres`, title "Title <k>", release year
1990 + k). User j's events, one hour apart, are on items j, j+1, j+2, j+3 (mod 10), so their
recent history, newest first, is [j+3, j+2, j+1, j]. Item k is in `EVENTS_PER_ITEM[k]` events.

Version "v2" (active) is `make_payload` with 6 users, 10 items, 4 recommendations (user j gets
j, j+1, j+2, j+3 in that order, the last user only 3, each explained by j+t+7 and j+t+8).
Version "v1" (the previous one) gave user j: j+4, j+2, j, j+1 -- so from v1 to v2 user 0
gained i3 (rank 4), lost i4 (was 1), i0 moved 3 -> 1, i1 4 -> 2 and i2 2 -> 3.
"""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from pymongo.database import Database

from features.online import switch_online, write_snapshot
from features.snapshot import Manifest, build_snapshot
from serving.payload import PublishPayload
from serving.store import MongoServingStore
from serving.version_writer import write_payload_version
from tests.serving.payloads import item_genres, make_payload

N_USERS, N_ITEMS, TOP = 6, 10, 4
SNAPSHOT = "s1"
START = datetime(2024, 3, 1, tzinfo=UTC)
METRICS_V2 = {"als": {"ndcg@10": 0.31, "recall@10": 0.2}, "popular": {"ndcg@10": 0.12},
              "k": 10, "timings": {"fit_train_s": 1.5}}
METRICS_V1 = {"als": {"ndcg@10": 0.25, "recall@10": 0.21}, "popular": {"ndcg@10": 0.12},
              "k": 10}


def events() -> list[tuple[str, str, datetime]]:
    """(user, item, time) of every event."""
    return [(f"u{j}", f"i{(j + t) % N_ITEMS}", START + timedelta(days=j, hours=t))
            for j in range(N_USERS) for t in range(4)]


EVENTS_PER_ITEM = np.bincount([int(i[1:]) for _, i, _ in events()], minlength=N_ITEMS)


def build_catalogue_snapshot(root: Path) -> Manifest:
    """The feature snapshot `SNAPSHOT` of the catalogue above, under `root/features`."""
    raw = root / "raw"
    raw.mkdir(parents=True, exist_ok=True)
    rows = events()
    tables = {
        "users": pa.table({"user_id": [f"u{j}" for j in range(N_USERS)],
                           "age": [20 + j for j in range(N_USERS)]}),
        "items": pa.table({"item_id": [f"i{k}" for k in range(N_ITEMS)],
                           "title": [f"Title {k}" for k in range(N_ITEMS)],
                           "genres": [item_genres(k) for k in range(N_ITEMS)],
                           "release_year": [1990 + k for k in range(N_ITEMS)]}),
        "interactions": pa.table({
            "user_id": [u for u, _, _ in rows], "item_id": [i for _, i, _ in rows],
            "timestamp": pa.array([t for _, _, t in rows], pa.timestamp("us", tz="UTC")),
            "rating": pa.array([4.0] * len(rows), pa.float64()),
            "weight": pa.array([None] * len(rows), pa.float64()),
            "event_type": pa.array(["view"] * len(rows), pa.string())}),
    }
    paths = {}
    for name, table in tables.items():
        paths[name] = raw / f"{name}.parquet"
        pq.write_table(table, paths[name])
    return build_snapshot(paths, features_root=root / "features", snapshot_id=SNAPSHOT)


def v2_payload() -> PublishPayload:
    payload = make_payload("v2", n_users=N_USERS, n_items=N_ITEMS, top_n=TOP, attributes=True,
                           explain=True)
    return dataclasses.replace(payload, metadata={"feature_snapshot": SNAPSHOT,
                                                  "metrics": METRICS_V2})


def v1_payload() -> PublishPayload:
    v2 = make_payload("v1", n_users=N_USERS, n_items=N_ITEMS, top_n=TOP, attributes=True)
    u = np.arange(N_USERS)[:, None]
    rec = ((u + np.array([4, 2, 0, 1])[None, :]) % N_ITEMS).astype(np.int32)
    return dataclasses.replace(v2, rec_items=rec, metadata={"feature_snapshot": SNAPSHOT,
                                                            "metrics": METRICS_V1})


def v2_list(j: int) -> list[str]:
    """User j's list in v2 (the last user's list is cut to 3 items by `make_payload`)."""
    n = 3 if j == N_USERS - 1 else TOP
    return [f"i{(j + t) % N_ITEMS}" for t in range(n)]


def publish_catalogue(db: Database, store: MongoServingStore, root: Path) -> Manifest:
    """Materialize the snapshot online, publish v1 then v2 and serve v2 (previous: v1)."""
    manifest = build_catalogue_snapshot(root)
    write_snapshot(db, manifest)
    switch_online(db, SNAPSHOT)
    write_payload_version(store.db, v1_payload())
    store.activate("v1")
    write_payload_version(store.db, v2_payload())
    store.activate("v2")
    return manifest
