"""Hand-made `PublishPayload`s with known answers."""

from __future__ import annotations

from datetime import UTC, datetime

import numpy as np

from serving.payload import PublishPayload

N_USERS, N_ITEMS, TOP_N, SIMILAR_N, FACTORS, POPULAR_N = 20, 30, 5, 5, 4, 10
GENERATED_AT = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)


GENRES = ("Comedy", "Drama", "Horror")
EXPLAIN_E = 2


def item_genres(k: int) -> list[str]:
    """Item i<k> has genre GENRES[k % 3], and also "Drama" when k is divisible by 5."""
    out = [GENRES[k % 3]]
    if k % 5 == 0 and out[0] != "Drama":
        out.append("Drama")
    return out


def make_payload(version: str = "v1", *, seed: int = 0, n_users: int = N_USERS,
                 n_items: int = N_ITEMS, top_n: int = TOP_N, attributes: bool = False,
                 explain: bool = False) -> PublishPayload:
    """A small deterministic payload: user u<i> gets items (i + j) % n_items, scores descending.

    The last user's list is padded with -1 after 3 items, to exercise padding. With
    `attributes`, items carry `genres` (see `item_genres`); with `explain`, recommendation j of
    user i is explained by items (i + j + 7) % n_items (contribution 0.5) and
    (i + j + 8) % n_items (0.25).
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
    extra: dict = {}
    if attributes:
        extra["item_attributes"] = {"genres": [item_genres(k) for k in range(n_items)]}
    if explain:
        base = (u + np.arange(top_n)[None, :])[:, :, None] + 7 + np.arange(EXPLAIN_E)
        ex_items = (base % n_items).astype(np.int32)
        ex_scores = np.broadcast_to(np.array([0.5, 0.25], dtype=np.float32),
                                    ex_items.shape).copy()
        ex_items[-1, 3:] = -1
        ex_scores[-1, 3:] = 0
        extra["rec_explain_items"] = ex_items
        extra["rec_explain_scores"] = ex_scores
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
        **extra,
    )
