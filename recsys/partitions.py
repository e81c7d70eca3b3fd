"""User partitions and the one way a stage fans work out over them.

A partitioned stage splits its work by a stable hash of the user id (`partition_of`) and runs
one plain function per part through a `Mapper`. The stage itself never knows where the parts
run: `serial_map` (the default, and the local runner) runs them one after another in this
process; the flows pass a mapper that submits each part as a Prefect task to the Dask cluster
(`flows/runner.py`). Part functions are module-level functions whose arguments are paths and
plain values, so they pickle cheaply and a retried part redoes exactly its own work.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, Protocol, TypeVar

import numpy as np
import pandas as pd

R = TypeVar("R")

#: The share of a Dask worker's memory limit that the DuckDB of the parts running there may
#: hold together before spilling to disk; the rest is for Python objects and Arrow buffers.
WORKER_DUCKDB_SHARE = 0.5

# pandas' hash_array is SipHash-2-4 keyed with these 16 bytes: the same id gets the same
# partition on every machine and every run (Python's own hash() is salted per process).
_HASH_KEY = "recsys-partition"


def partition_of(user_ids: Sequence[Any] | np.ndarray | pd.Series, n_partitions: int
                 ) -> np.ndarray:
    """The partition (0 .. n_partitions - 1, int32) of each user id, from its string form.

    Vectorised; ids are compared as strings, as everywhere in the project.
    """
    if n_partitions < 1:
        raise ValueError(f"n_partitions must be >= 1, got {n_partitions}")
    values = np.asarray(pd.Series(user_ids, dtype="object").astype(str), dtype=object)
    if n_partitions == 1 or len(values) == 0:
        return np.zeros(len(values), dtype=np.int32)
    hashes = pd.util.hash_array(values, hash_key=_HASH_KEY, categorize=False)
    return (hashes % np.uint64(n_partitions)).astype(np.int32)


class Mapper(Protocol):
    """Runs `fn(*args)` for every args tuple and returns the results in the same order.

    `label` names the parts in logs and in the Prefect UI (``score``, ``publish``).
    """

    def __call__(self, label: str, fn: Callable[..., R], args_list: Sequence[tuple[Any, ...]]
                 ) -> list[R]: ...


def serial_map(label: str, fn: Callable[..., R], args_list: Sequence[tuple[Any, ...]]
               ) -> list[R]:
    """The local mapper: each part in turn, in this process."""
    return [fn(*args) for args in args_list]


def part_memory_limit(configured: str | None = None) -> str | None:
    """The DuckDB ``memory_limit`` of a part's connection.

    `configured` when given; else, in a Dask worker that has a memory limit,
    `WORKER_DUCKDB_SHARE` of that limit divided among the worker's threads (each may run a
    part); else None (DuckDB's default). DuckDB's default is 80 % of the host's memory in
    every process, so parts on several workers of one host would together claim several times
    the host, and the nanny would kill their workers where DuckDB could have spilled to disk.
    """
    if configured is not None:
        return configured
    try:
        from distributed import get_worker

        worker = get_worker()
    except (ImportError, ValueError):  # not installed, or not in a worker
        return None
    limit = getattr(getattr(worker, "memory_manager", None), "memory_limit", None)
    if not limit:
        return None
    threads = max(1, int(getattr(getattr(worker, "state", None), "nthreads", 1) or 1))
    return f"{max(1, int(limit * WORKER_DUCKDB_SHARE / threads) // 2**20)}MiB"
