"""Where a flow's partitioned stages run: in the flow's own process, or on a Dask cluster.

`RECSYS_TASK_RUNNER=local` (the default) runs every part of every stage in turn, in the flow's
process (`recsys.partitions.serial_map`). With `dask`, `open_runner` opens prefect-dask's
`DaskTaskRunner` for the whole flow run: connected to `RECSYS_DASK_ADDRESS` when it is set,
else on a `distributed.LocalCluster` of `RECSYS_DASK_WORKERS` worker processes started for the
run and closed after it. The cluster is reached (or started) before the flow does anything,
so a run whose cluster is down fails with one line naming the address and writes nothing.

The flow hands `FlowRunner.mapper` to each partitioned stage: it submits every part as a
Prefect task run (``score part 3/9`` in the UI: the stage's label and the part's position
among the stage's parts; a child of the stage's task run) to that task runner, exactly as
`Task.submit` does inside a flow whose task runner it is, and waits for all of them. The flow opens the runner itself, from the settings it loads, instead of being
decorated with a task runner: so the CLI and the deployments of prefect.yaml run the same way,
and the serial stages (the ALS fit, the gate) stay in the flow's process.

A part that loses its worker (the process died, the pod was evicted) is run again by the Dask
scheduler on another worker, up to `distributed.scheduler.allowed-failures` times (3 by
default); part functions are idempotent (recsys/partitions.py), so a rerun redoes exactly its
own work. Part results are small (paths, counts) and are never persisted by Prefect.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, TypeVar

import distributed
from prefect import task
from prefect.cache_policies import NONE
from prefect_dask import DaskTaskRunner

from recsys.errors import DaskClusterError
from recsys.partitions import Mapper, serial_map
from recsys.settings import Settings

R = TypeVar("R")


@dataclass(frozen=True)
class FlowRunner:
    """The open runner of one flow run.

    Attributes:
        kind: ``local`` or ``dask``.
        description: one line for the logs and the CLI (runner, cluster, workers, partitions).
        mapper: what the flow passes to the partitioned stages (`recsys.partitions.Mapper`).
    """

    kind: str
    description: str
    mapper: Mapper


def planned_runner(settings: Settings) -> str:
    """One line saying where a run with these settings will run its stages (nothing started)."""
    parts = settings.partition_count
    if settings.task_runner == "local":
        return f"local runner (every stage in the flow's process, {parts} partition(s))"
    cluster = (f"the Dask cluster at {settings.dask_address}" if settings.dask_address else
               f"a LocalCluster of {settings.dask_workers} worker processes started for the run")
    return f"dask runner on {cluster}, {parts} partition(s)"


@contextmanager
def open_runner(settings: Settings) -> Iterator[FlowRunner]:
    """Open the task runner the settings ask for, for the length of the `with` block.

    With `dask`, the cluster is connected to (or started, and closed on exit) before the block
    runs.

    Raises:
        DaskClusterError: the cluster at `RECSYS_DASK_ADDRESS` cannot be reached or has no
            worker, or the local cluster cannot be started.
    """
    if settings.task_runner == "local":
        yield FlowRunner(kind="local", description=planned_runner(settings), mapper=serial_map)
        return
    with _dask_task_runner(settings) as task_runner:
        client = _connect(task_runner, settings)
        yield FlowRunner(kind="dask", description=_describe(client, settings),
                         mapper=DaskMapper(task_runner))


def _dask_task_runner(settings: Settings) -> DaskTaskRunner:
    if settings.dask_address:
        return DaskTaskRunner(address=settings.dask_address,
                              client_kwargs={"timeout": f"{settings.dask_connect_timeout_s}s"})
    # One thread per worker process: a part is the unit of parallelism, and the nanny already
    # limits each worker's BLAS/OpenMP to one thread (distributed.nanny.pre-spawn-environ).
    # The dashboard needs bokeh, which is not a dependency: a free port when it is installed.
    dashboard = ":0" if importlib.util.find_spec("bokeh") else None
    return DaskTaskRunner(cluster_class=distributed.LocalCluster,
                          cluster_kwargs={"n_workers": settings.dask_workers,
                                          "threads_per_worker": 1, "processes": True,
                                          "dashboard_address": dashboard})


def _connect(task_runner: DaskTaskRunner, settings: Settings) -> distributed.Client:
    """Reach the scheduler now (the task runner would otherwise connect on the first part),
    and make sure it has a worker (parts sent to a scheduler without one wait forever)."""
    try:
        client = task_runner.client
    except Exception as error:  # noqa: BLE001 - any failure to connect means the same thing
        cause = str(error).splitlines()[0] if str(error) else type(error).__name__
        if settings.dask_address:
            raise DaskClusterError(
                f"the Dask cluster at {settings.dask_address} (RECSYS_DASK_ADDRESS) cannot be "
                f"reached: {cause}") from None
        raise DaskClusterError(
            f"a LocalCluster of {settings.dask_workers} worker processes could not be started: "
            f"{cause}") from None
    try:
        client.wait_for_workers(1, timeout=settings.dask_connect_timeout_s)
    except TimeoutError:
        raise DaskClusterError(
            f"the Dask cluster at {client.scheduler.address} has no worker (waited "
            f"{settings.dask_connect_timeout_s:g} s): start `dask worker {client.scheduler.address}`"
        ) from None
    return client


def _describe(client: distributed.Client, settings: Settings) -> str:
    workers = len(client.scheduler_info(n_workers=-1).get("workers", {}))
    # the client builds a link even where no dashboard runs (no bokeh here)
    dashboard = (f", dashboard {client.dashboard_link}"
                 if settings.dask_address or importlib.util.find_spec("bokeh") else "")
    cluster = (f"the Dask cluster at {settings.dask_address}" if settings.dask_address else
               f"a LocalCluster at {client.scheduler.address} started for the run")
    return (f"dask runner on {cluster} ({workers} worker(s){dashboard}), "
            f"{settings.partition_count} partition(s)")


@task(name="run-part", task_run_name="{label} part {number}/{parts}", cache_policy=NONE,
      persist_result=False)
def run_part(label: str, number: int, parts: int, fn: Callable[..., R],
             args: tuple[Any, ...]) -> R:
    """One part of a partitioned stage, on a Dask worker: `fn(*args)`.

    `number` counts from 1 for the run name; `fn` is a module-level function (pickled by
    reference) and `args` are paths and small plain values (recsys/partitions.py).
    """
    return fn(*args)


class DaskMapper:
    """`recsys.partitions.Mapper` over a started `DaskTaskRunner`: every part one Prefect task
    run on the cluster; results in the order of `args_list`."""

    def __init__(self, task_runner: DaskTaskRunner) -> None:
        self._task_runner = task_runner

    def __reduce__(self) -> tuple[Any, ...]:
        # The runner stays with the flow. Prefect serializes the parent task run's parameters
        # (this mapper among them) into the context of every part it submits, and hashes them
        # for its default cache policy: both get a stand-in that runs parts serially.
        return _serial_mapper, ()

    def __call__(self, label: str, fn: Callable[..., R], args_list: Sequence[tuple[Any, ...]]
                 ) -> list[R]:
        parts = len(args_list)
        futures = [self._task_runner.submit(run_part, {"label": label, "number": number,
                                                       "parts": parts, "fn": fn,
                                                       "args": tuple(args)})
                   for number, args in enumerate(args_list, start=1)]
        # Every part finishes (or fails) before the stage goes on or reports a failure, so no
        # part is still writing when the stage's caller looks at the outputs.
        for future in futures:
            future.wait()
        results: list[R] = []
        for number, future in enumerate(futures, start=1):
            try:
                results.append(future.result())
            except distributed.client.FutureCancelledError as error:
                raise DaskClusterError(f"{label} part {number}/{parts} was cancelled by the "
                                       f"Dask cluster: {error}") from None
            except distributed.scheduler.KilledWorker as error:
                raise DaskClusterError(f"{label} part {number}/{parts} lost its worker more "
                                       f"often than Dask retries it: {error}") from None
        return results


def _serial_mapper() -> Mapper:
    return serial_map
