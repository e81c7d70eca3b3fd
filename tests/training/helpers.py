"""Synthetic matrices with known answers, shared by the training tests."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import scipy.sparse as sp

from features.snapshot import Manifest, ViewSnapshot, manifest_path
from training.data import to_csr

N_PER_GROUP = 10


def make_checkerboard(seed: int = 0, per_user: int = 6) -> sp.csr_matrix:
    """20 users x 20 items: users 0-9 only like items 0-9, users 10-19 only items 10-19.

    Each user likes `per_user` of the 10 items of their group, so every user has unseen items in
    their own group to be recommended.
    """
    rng = np.random.default_rng(seed)
    rows, cols = [], []
    for group in range(2):
        for u in range(N_PER_GROUP):
            items = rng.choice(N_PER_GROUP, size=per_user, replace=False) + group * N_PER_GROUP
            rows.extend([group * N_PER_GROUP + u] * per_user)
            cols.extend(items.tolist())
    data = np.ones(len(rows), dtype=np.float32)
    n = 2 * N_PER_GROUP
    return to_csr(sp.coo_matrix((data, (rows, cols)), shape=(n, n)))


def group_of(index: np.ndarray) -> np.ndarray:
    return np.asarray(index) // N_PER_GROUP


def bigger_checkerboard() -> sp.csr_matrix:
    """4 stacked checkerboards (80 users x 20 items) so that validation splits are not tiny."""
    return to_csr(sp.vstack([make_checkerboard(seed=s, per_user=8) for s in range(4)]))


# ALS parameters that learn the checkerboard (GOOD) and that cannot (BAD)
GOOD = {"factors": 2, "regularization": 0.1, "alpha": 5.0, "iterations": 10, "seed": 3}
BAD = {"factors": 1, "regularization": 500.0, "alpha": 0.1, "iterations": 1, "seed": 3}


def write_snapshot(root: Path, snapshot_id: str, *, drop_users: int = 0,
                   with_last_ts: bool = False) -> Manifest:
    matrix = bigger_checkerboard()
    coo = matrix.tocoo()
    keep = coo.row >= drop_users
    users = np.char.add("u", coo.row[keep].astype(str).astype(object).astype(str))
    items = np.char.add("i", coo.col[keep].astype(str))
    path = root / "features" / "interactions" / f"snapshot={snapshot_id}" / "data.parquet"
    path.parent.mkdir(parents=True, exist_ok=True)
    columns = {"user_id": users.astype(str), "item_id": items.astype(str),
               "weight": coo.data[keep].astype(np.float64)}
    if with_last_ts:  # as the feature store writes it: microseconds, UTC
        micros = np.random.default_rng(0).integers(1_600_000_000, 1_700_000_000,
                                                   int(keep.sum())) * 10**6
        columns["last_ts"] = pa.array(micros, pa.int64()).cast(pa.timestamp("us", tz="UTC"))
    pq.write_table(pa.table(columns), path)
    item_path = root / "features" / "item_features" / f"snapshot={snapshot_id}" / "data.parquet"
    item_path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.table({"item_id": np.unique(items.astype(str))}), item_path)
    manifest = Manifest(
        snapshot_id=snapshot_id, created_at=datetime.now(UTC).isoformat(), as_of=None,
        duckdb_version="test", sources={"interactions": {"path": str(path), "sha256": "abc"}},
        views={"interactions": ViewSnapshot(name="interactions", path=str(path),
                                            rows=int(keep.sum()), schema=[]),
               "item_features": ViewSnapshot(name="item_features", path=str(item_path),
                                             rows=20, schema=[])})
    target = manifest_path(root / "features", snapshot_id)
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(json.dumps(manifest.to_dict()))
    return manifest
