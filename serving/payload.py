"""What a publish writes: the contract between training (producer) and serving (consumer).

Arrays rather than documents, so the producer stays vectorised and the publisher decides how to
batch them into MongoDB documents.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import numpy as np


@dataclass(frozen=True, kw_only=True)
class PublishPayload:
    """One model version's serving data.

    Attributes:
        version: the model version id (also names the MongoDB collections).
        generated_at: when the recommendations were computed (UTC).
        user_ids: (n_users,) str ids; row i of every per-user array belongs to user_ids[i].
        item_ids: (n_items,) str ids; item indices in the arrays below point into this.
        rec_items: (n_users, N) int32 item indices, best first; -1 pads short lists.
        rec_scores: (n_users, N) float32 scores matching rec_items.
        similar_items: (n_items, M) int32 item indices, most similar first, the item itself
            excluded; -1 pads.
        similar_scores: (n_items, M) float32 cosine similarities.
        user_factors: (n_users, f) float32 embeddings.
        item_factors: (n_items, f) float32 embeddings.
        popular_items: (P,) int32 item indices, most popular first.
        popular_scores: (P,) float32 popularity scores.
        metadata: model parameters, metrics, feature snapshot id, ... (JSON-serialisable).
        rec_explain_items: optional (n_users, N, E) int32 indices of the user's past items that
            contributed most to each recommendation (-1 pads); None when not computed.
        rec_explain_scores: optional (n_users, N, E) float32 contributions matching
            rec_explain_items.
        item_attributes: optional item attributes from the feature snapshot, name -> sequence of
            length n_items (e.g. "genres" -> list of lists of str), denormalised into the
            serving documents so the API can filter with one read.
    """

    version: str
    generated_at: datetime
    user_ids: np.ndarray
    item_ids: np.ndarray
    rec_items: np.ndarray
    rec_scores: np.ndarray
    similar_items: np.ndarray
    similar_scores: np.ndarray
    user_factors: np.ndarray
    item_factors: np.ndarray
    popular_items: np.ndarray
    popular_scores: np.ndarray
    metadata: dict[str, Any] = field(default_factory=dict)
    rec_explain_items: np.ndarray | None = None
    rec_explain_scores: np.ndarray | None = None
    item_attributes: dict[str, Sequence[Any]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        n_users, n_items = len(self.user_ids), len(self.item_ids)
        checks = {
            "rec_items": (self.rec_items.shape[0] == n_users and self.rec_items.ndim == 2),
            "rec_scores": self.rec_scores.shape == self.rec_items.shape,
            "similar_items": (self.similar_items.shape[0] == n_items
                              and self.similar_items.ndim == 2),
            "similar_scores": self.similar_scores.shape == self.similar_items.shape,
            "user_factors": self.user_factors.shape[0] == n_users,
            "item_factors": self.item_factors.shape[0] == n_items,
            "popular_scores": self.popular_scores.shape == self.popular_items.shape,
        }
        if self.rec_explain_items is not None:
            checks["rec_explain_items"] = (self.rec_explain_items.ndim == 3 and
                                           self.rec_explain_items.shape[:2] == self.rec_items.shape)
            checks["rec_explain_scores"] = (self.rec_explain_scores is not None and
                                            self.rec_explain_scores.shape
                                            == self.rec_explain_items.shape)
        for name, values in self.item_attributes.items():
            checks[f"item_attributes[{name}]"] = len(values) == n_items
        bad = [name for name, ok in checks.items() if not ok]
        if bad:
            raise ValueError(f"PublishPayload shape mismatch in {bad} "
                             f"(n_users={n_users}, n_items={n_items})")
