"""Fixtures for the training tests."""

from __future__ import annotations

import pytest
import scipy.sparse as sp

from tests.training.helpers import make_checkerboard
from training.model import AlsParams


@pytest.fixture
def checkerboard() -> sp.csr_matrix:
    return make_checkerboard()


@pytest.fixture
def small_params() -> AlsParams:
    # rank 2 is the structure of the checkerboard; more factors memorise the training pattern
    return AlsParams(factors=2, regularization=0.1, alpha=5.0, iterations=15, seed=7)
