"""Synthetic matrices with known answers, shared by the training tests."""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp

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
