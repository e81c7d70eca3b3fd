"""Hand-made `PublishPayload`s with known answers."""

from __future__ import annotations

from datetime import UTC, datetime

import numpy as np

from serving.payload import PublishPayload

N_USERS, N_ITEMS, TOP_N, SIMILAR_N, FACTORS, POPULAR_N = 20, 30, 5, 5, 4, 10
GENERATED_AT = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)


def make_payload(version: str = "v1", *, seed: int = 0, n_users: int = N_USERS,
                 n_items: int = N_ITEMS, top_n: int = TOP_N) -> PublishPayload:
    """A small deterministic payload: user u<i> gets items (i + j) % n_items, scores descending.

    The last user's list is padded with -1 after 3 items, to exercise padding.
    """
    rng = np.random.default_rng(seed)
    u = np.arange(n_users)[:, None]
    rec_items = ((u + np.arange(top_n)[None, :]) % n_items).astype(np.int32)
    rec_scores = np.tile(np.linspace(1.0, 0.5, top_n, dtype=np.float32), (n_users, 1))
    rec_items[-1, 3:] = -1
    rec_scores[-1, 3:] = 0
    i = np.arange(n_items)[:, None]
    similar_items = ((i + 1 + np.arange(SIMILAR_N)[None, :]) % n_items).astype(np.int32)
    similar_scores = np.tile(np.linspace(0.9, 0.1, SIMILAR_N, dtype=np.float32), (n_items, 1))
    return PublishPayload(
        version=version,
        generated_at=GENERATED_AT,
        user_ids=np.array([f"u{k}" for k in range(n_users)]),
        item_ids=np.array([f"i{k}" for k in range(n_items)]),
        rec_items=rec_items,
        rec_scores=rec_scores,
        similar_items=similar_items,
        similar_scores=similar_scores,
        user_factors=rng.standard_normal((n_users, FACTORS)).astype(np.float32),
        item_factors=rng.standard_normal((n_items, FACTORS)).astype(np.float32),
        popular_items=np.arange(POPULAR_N, dtype=np.int32)[::-1].copy(),
        popular_scores=np.linspace(100, 10, POPULAR_N).astype(np.float32),
        metadata={"params": {"factors": FACTORS}, "metrics": {"precision_at_10": 0.25}},
    )
