"""What a version's recommendation lists cover, computed once at publish time from the payload.

The API's `/stats` endpoints report catalogue coverage and each genre's share of the
recommendations. Counting them from the stored lists would read every user's document (tens of
millions of list entries); the publisher has the same lists as arrays already, so it counts
them here with a few vectorised passes and stores the result in the version's `model_versions`
document (field ``recommendations``, see `serving/store.py`).
"""

from __future__ import annotations

from collections.abc import Sequence
from itertools import chain
from typing import Any

import numpy as np

_CHUNK_ROWS = 200_000

def recommendation_stats(rec_idx: np.ndarray, n_items: int,
                         genres: Sequence[Any] | None = None) -> dict[str, Any]:
    """Counts over the personalised lists of one version (the popular fallback list aside).

    Args:
        rec_idx: (n_users, N) item indices, -1 padding at the end of a row (checked already).
        n_items: items the model knows.
        genres: per item index, its genres (a list of str, or None), when the payload has them.

    Returns:
        ``{lists, slots, items, recommended_items, genres}``: users with a non-empty list,
        listed (user, item) entries, the model's items, distinct items in at least one list,
        and per genre ``{genre, items, recommended_items, slots}`` (the model's items of the
        genre, those recommended, and list entries whose item has the genre; an item with
        several genres counts for each). `genres` is None without genre attributes.
    """
    per_item, lists = list_counts(rec_idx, n_items)
    return stats_from_counts(per_item, lists, genres)


def list_counts(rec_idx: np.ndarray, n_items: int) -> tuple[np.ndarray, int]:
    """(list entries per item index (int64, length n_items), non-empty lists) of `rec_idx`.

    Counts of several user partitions add up; `stats_from_counts` turns the sum into the stats.
    """
    rec_idx = np.asarray(rec_idx)
    per_item = np.zeros(n_items + 1, dtype=np.int64)  # slot 0 counts the -1 padding
    lists = 0
    for start in range(0, rec_idx.shape[0], _CHUNK_ROWS):  # bounded temporaries
        chunk = rec_idx[start: start + _CHUNK_ROWS]
        per_item += np.bincount(chunk.ravel() + 1, minlength=n_items + 1)
        if chunk.shape[1]:
            lists += int(np.count_nonzero(chunk[:, 0] >= 0))  # padding only at the end
    return per_item[1:], lists


def stats_from_counts(per_item: np.ndarray, lists: int,
                      genres: Sequence[Any] | None = None) -> dict[str, Any]:
    """`recommendation_stats` from (summed) `list_counts`."""
    per_item = np.asarray(per_item, dtype=np.int64)
    stats: dict[str, Any] = {
        "lists": int(lists),
        "slots": int(per_item.sum()),
        "items": int(len(per_item)),
        "recommended_items": int(np.count_nonzero(per_item)),
        "genres": None,
    }
    if genres is not None:
        stats["genres"] = _genre_counts(per_item, genres)
    return stats


def _genre_counts(per_item: np.ndarray, genres: Sequence[Any]) -> list[dict[str, Any]]:
    lists = [list(dict.fromkeys(g)) if isinstance(g, list | tuple) else [] for g in genres]
    lengths = np.fromiter((len(g) for g in lists), dtype=np.int64, count=len(lists))
    names = np.asarray([str(g) for g in chain.from_iterable(lists)], dtype=object)
    if names.size == 0:
        return []
    labels, codes = np.unique(names.astype(str), return_inverse=True)
    owner = np.repeat(np.arange(len(lists)), lengths)  # item index of each (item, genre) pair
    counts = per_item[owner]
    n = len(labels)
    items = np.bincount(codes, minlength=n)
    recommended = np.bincount(codes, weights=(counts > 0).astype(np.float64), minlength=n)
    slots = np.bincount(codes, weights=counts.astype(np.float64), minlength=n)
    order = np.lexsort((labels, -slots))
    return [{"genre": str(labels[i]), "items": int(items[i]),
             "recommended_items": int(recommended[i]), "slots": int(slots[i])} for i in order]
