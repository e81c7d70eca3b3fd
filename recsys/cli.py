"""`recsys`: the one command-line entry point."""

from __future__ import annotations

import json
import logging
import os
import sys
import time
from pathlib import Path
from typing import Annotated, Any

import typer
from pymongo.errors import PyMongoError

from recsys.errors import RecsysError
from recsys.settings import load_settings

OWN_LOGGERS = ("recsys", "ingest", "features", "training", "serving", "flows")

app = typer.Typer(help="Batch recommendation platform: pipeline, embedded MongoDB, API.",
                  no_args_is_help=True, pretty_exceptions_enable=False)
mongo_app = typer.Typer(help="Run the embedded MongoDB-wire server (secantusd-py).",
                        no_args_is_help=True)
app.add_typer(mongo_app, name="mongo")

from training.cli import models_app  # noqa: E402 - `recsys models ...` lives with the registry

app.add_typer(models_app, name="models")

from features.cli import features_app  # noqa: E402 - `recsys features ...` lives with the store

app.add_typer(features_app, name="features")

from serving.cli import ops_app  # noqa: E402 - `recsys ops ...` lives with the serving database

app.add_typer(ops_app, name="ops")


@ops_app.command("prune")
def prune_cmd(
    snapshots: Annotated[int | None, typer.Option(
        help="feature snapshots kept (default: RECSYS_FEATURE_KEEP_SNAPSHOTS)")] = None,
    models: Annotated[int | None, typer.Option(
        help="model versions kept (default: RECSYS_KEEP_MODELS)")] = None,
    backups: Annotated[int, typer.Option(help="complete backups kept")] = 7,
    log_days: Annotated[float, typer.Option(help="delete logs and Prefect results older "
                                                 "than this many days")] = 14,
) -> None:
    """Apply every retention rule over the data dir; print what was removed (JSON).

    Never removes a model MongoDB still lists (or may roll back to), nor a snapshot that a kept,
    published or online model uses.
    """
    from flows.housekeeping import prune_all

    removed = prune_all(load_settings(), keep_snapshots=snapshots, keep_models=models,
                        keep_backups=backups, log_days=log_days)
    typer.echo(json.dumps(removed, indent=2))


def _fail(message: str, code: int = 1) -> typer.Exit:
    typer.secho(f"error: {message}", fg=typer.colors.RED, err=True)
    return typer.Exit(code)


def _configure_prefect_defaults() -> None:
    """Defaults for the settings of Prefect (and of the engines a run uses) when the user has
    not set them.

    A local run starts Prefect's temporary server; on a 2-core machine it can need more than
    the default 20 s, and telemetry has no network to reach here.
    """
    os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "120")
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    os.environ.setdefault("GX_ANALYTICS_ENABLED", "False")
    # Dask's scheduler and nannies log every start and connection at INFO (RECSYS_TASK_RUNNER=
    # dask); the run says which cluster it used in one line of its own (flows/runner.py).
    os.environ.setdefault("DASK_LOGGING__DISTRIBUTED", "warning")


class RunLogFormatter(logging.Formatter):
    """Says where a record comes from: the Prefect task or flow run that logged it (Prefect's
    run loggers attach ``task_run_name`` / ``flow_run_name``), else the logger's name; so
    "Finished in state Completed()" names its task."""

    def format(self, record: logging.LogRecord) -> str:
        task_run = getattr(record, "task_run_name", None)
        flow_run = getattr(record, "flow_run_name", None)
        record.source = (f"task '{task_run}'" if task_run
                         else f"flow '{flow_run}'" if flow_run else record.name)
        return super().format(record)


class StderrHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """Writes to whatever ``sys.stderr`` is now: while rich draws progress bars it swaps in a
    proxy that prints log lines above the bars. (No leading underscore in the name: Prefect's
    logging setup keeps only root handlers that look like the user's own.)"""

    def __init__(self) -> None:
        super().__init__(sys.stderr)

    @property  # type: ignore[override]
    def stream(self) -> Any:
        return sys.stderr

    @stream.setter
    def stream(self, _value: Any) -> None:  # StreamHandler.__init__ assigns it
        pass


@app.callback()
def main(verbose: Annotated[bool, typer.Option("--verbose", "-v")] = False) -> None:
    # Our own modules log at INFO; libraries (httpx, GE, ...) only speak up on warnings.
    handler = StderrHandler()
    handler.setFormatter(RunLogFormatter("%(asctime)s %(levelname)s %(source)s: %(message)s"))
    logging.basicConfig(level=logging.DEBUG if verbose else logging.WARNING, handlers=[handler])
    if not verbose:
        for name in OWN_LOGGERS:
            logging.getLogger(name).setLevel(logging.INFO)


@mongo_app.command("start")
def mongo_start(
    port: Annotated[int, typer.Option(help="TCP port")] = 27017,
    path: Annotated[Path | None, typer.Option(help="storage dir (default: <data>/mongo/db)")] = None,
    host: Annotated[str, typer.Option(help="bind address")] = "127.0.0.1",
) -> None:
    """Start secantusd-py in the background and print its URI."""
    from recsys.mongo_server import EmbeddedMongo

    settings = load_settings()
    server = EmbeddedMongo(state_dir=settings.mongo_dir, host=host, port=port, storage_path=path)
    try:
        state = server.start(wait_seconds=settings.mongo_start_timeout_s)
    except RecsysError as error:
        raise _fail(str(error)) from None
    typer.echo(state.uri)


@mongo_app.command("stop")
def mongo_stop() -> None:
    """Stop the server that `recsys mongo start` launched."""
    from recsys.mongo_server import EmbeddedMongo

    stopped = EmbeddedMongo(state_dir=load_settings().mongo_dir).stop()
    typer.echo("stopped" if stopped else "not running")


@mongo_app.command("status")
def mongo_status() -> None:
    """Say whether the embedded server runs, and where (exit 1 when it does not)."""
    from recsys.mongo_server import EmbeddedMongo, ping

    state = EmbeddedMongo(state_dir=load_settings().mongo_dir).read_state()
    if state is None or not ping(state.uri):
        typer.echo("not running")
        raise typer.Exit(1)
    typer.echo(f"running: {state.uri} (pid {state.pid}, storage {state.storage_path})")


@app.command()
def generate(
    out_dir: Annotated[Path, typer.Argument(help="batch directory to write")],
    users: Annotated[int, typer.Option(help="number of users")] = 1000,
    items: Annotated[int, typer.Option(help="number of items")] = 500,
    interactions: Annotated[int, typer.Option(help="number of interactions")] = 50_000,
    seed: Annotated[int, typer.Option(help="random seed (same seed, same files)")] = 42,
    fmt: Annotated[str, typer.Option("--format", help="csv or parquet")] = "parquet",
) -> None:
    """Generate a synthetic batch (users, items, interactions) with realistic skew."""
    from recsys.datagen import generate_batch

    if fmt not in ("csv", "parquet"):
        raise _fail(f"--format must be csv or parquet, not {fmt!r}")
    try:
        batch = generate_batch(out_dir, users=users, items=items, interactions=interactions,
                               seed=seed, fmt=fmt)  # type: ignore[arg-type]
    except ValueError as error:
        raise _fail(str(error)) from None
    typer.echo(f"wrote {batch.users} users, {batch.items} items, {batch.interactions} "
               f"interactions to {batch.directory}")


@app.command("import-movielens")
def import_movielens_cmd(
    src_dir: Annotated[Path, typer.Argument(help="folder with u.user, u.item, u.data")],
    out_dir: Annotated[Path, typer.Argument(help="batch directory to write")],
) -> None:
    """Convert MovieLens 100K into the input format."""
    from recsys.movielens import import_movielens

    try:
        batch = import_movielens(src_dir, out_dir)
    except RecsysError as error:
        raise _fail(str(error)) from None
    typer.echo(f"wrote {batch.users} users, {batch.items} items, {batch.interactions} "
               f"interactions to {batch.directory}")


def _metric_cell(value: Any, width: int) -> str:
    """One cell of `_metrics_table`: counts as integers, rates with 4 decimals."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return f"{'-' if value is None else value!s:>{width}}"
    return f"{value:>{width}d}" if isinstance(value, int) else f"{value:>{width}.4f}"


def _metrics_table(metrics: dict[str, Any]) -> str:
    """The holdout metrics per model (als, popular) as a text table."""
    rows = {name: values for name, values in metrics.items()
            if isinstance(values, dict) and name != "timings"}
    if not rows:
        return json.dumps(metrics)
    columns = sorted({col for values in rows.values() for col in values})
    widths = [max(10, len(c)) for c in columns]
    lines = ["model      " + "  ".join(f"{c:>{w}}" for c, w in zip(columns, widths, strict=True))]
    for name, values in rows.items():
        cells = "  ".join(_metric_cell(values.get(c), w)
                          for c, w in zip(columns, widths, strict=True))
        lines.append(f"{name:<10} {cells}")
    return "\n".join(lines)


def _timings_table(timings: dict[str, float]) -> str:
    """Seconds per pipeline stage, in run order, and their sum."""
    lines = [f"{'stage':<10} {'seconds':>10}",
             *(f"{stage:<10} {seconds:>10.1f}" for stage, seconds in timings.items()),
             f"{'total':<10} {sum(timings.values()):>10.1f}"]
    return "\n".join(lines)


@app.command()
def pipeline(
    input_dir: Annotated[Path, typer.Option("--input", help="batch directory")],
    run_id: Annotated[str | None, typer.Option(help="run id (default: new)")] = None,
) -> None:
    """Run validate -> features -> train -> publish (locally; no Prefect server needed).

    Without PREFECT_API_URL the run starts its own temporary Prefect server, which stops with
    the run, even when the run is killed. With RECSYS_TASK_RUNNER=dask the partitioned stages
    run on a Dask cluster (RECSYS_DASK_ADDRESS, else a LocalCluster of RECSYS_DASK_WORKERS
    processes started for the run); a cluster that cannot be reached fails the run before
    anything is written.
    """
    _configure_prefect_defaults()
    # a wrong setting ends here in one line, not in a traceback from the flow
    settings = load_settings()
    from flows.local_server import local_prefect_api
    from flows.pipeline import PipelineResult, batch_pipeline
    from flows.runner import planned_runner

    typer.echo(f"runner: {planned_runner(settings)}")
    started = time.perf_counter()
    with local_prefect_api():
        state = batch_pipeline(str(input_dir), run_id=run_id, return_state=True)
    elapsed = time.perf_counter() - started
    if not state.is_completed():
        raise _fail(f"pipeline failed after {elapsed:.1f}s: {state.message}")
    result: PipelineResult = state.result()
    if result.published and result.publish.get("skipped"):
        typer.echo(f"run {result.run_id}: inputs unchanged; model version {result.version} "
                   f"is already active ({elapsed:.1f}s)")
    elif result.published:
        typer.echo(f"run {result.run_id}: published and activated model version "
                   f"{result.version} in {elapsed:.1f}s")
    else:
        typer.echo(f"run {result.run_id}: champion kept; model version {result.version} "
                   f"registered, not published ({result.gate.get('reason')}) in {elapsed:.1f}s")
    if result.runner:
        typer.echo(f"ran on: {result.runner}")
    typer.echo(_metrics_table(result.metrics))
    if result.timings:
        typer.echo(_timings_table(result.timings))


@app.command()
def serve(
    host: Annotated[str | None, typer.Option(help="bind address")] = None,
    port: Annotated[int | None, typer.Option(help="TCP port")] = None,
    workers: Annotated[int, typer.Option(help="uvicorn worker processes")] = 1,
) -> None:
    """Serve the recommendations API (FastAPI on uvicorn).

    With several workers, Prometheus metrics go through a fresh folder under the data dir
    (prometheus-client's multiprocess mode), so `/metrics` sums every worker.
    """
    import shutil

    import uvicorn

    from serving.api.metrics import MULTIPROC_ENV, fresh_multiprocess_dir
    from serving.api.server import NoDelayH11Protocol

    settings = load_settings()
    metrics_dir = None
    if workers > 1:  # before any worker starts (and creates a metric)
        metrics_dir = fresh_multiprocess_dir(settings.data_dir / "api-metrics")
        os.environ[MULTIPROC_ENV] = str(metrics_dir)
    try:
        uvicorn.run("serving.api.main:app_from_environment", factory=True,
                    host=host or settings.api_host,
                    port=port or settings.api_port, workers=workers, log_level="info",
                    http=NoDelayH11Protocol,  # TCP_NODELAY with --workers too
                    access_log=False)  # our middleware logs requests (path only, no query keys)
    finally:
        if metrics_dir is not None:
            shutil.rmtree(metrics_dir, ignore_errors=True)


def run() -> None:  # pragma: no cover - console entry for `python -m recsys`
    try:
        app()
    except RecsysError as error:
        typer.secho(f"error: {error}", fg=typer.colors.RED, err=True)
        sys.exit(1)
    except PyMongoError as error:  # an outage is one line, not a driver traceback
        first = str(error).splitlines()[0][:300] if str(error) else type(error).__name__
        typer.secho(f"error: MongoDB unavailable ({type(error).__name__}: {first})",
                    fg=typer.colors.RED, err=True)
        sys.exit(1)
