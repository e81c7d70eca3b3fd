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
    """Defaults for Prefect's own settings when the user has not set them.

    A local run starts Prefect's temporary server; on a 2-core machine it can need more than
    the default 20 s, and telemetry has no network to reach here.
    """
    os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "120")
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    os.environ.setdefault("GX_ANALYTICS_ENABLED", "False")


@app.callback()
def main(verbose: Annotated[bool, typer.Option("--verbose", "-v")] = False) -> None:
    # Our own modules log at INFO; libraries (httpx, GE, ...) only speak up on warnings.
    logging.basicConfig(level=logging.DEBUG if verbose else logging.WARNING,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
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


def _metrics_table(metrics: dict[str, Any]) -> str:
    rows = {name: values for name, values in metrics.items()
            if isinstance(values, dict) and name != "timings"}
    if not rows:
        return json.dumps(metrics)
    columns = sorted({col for values in rows.values() for col in values})
    lines = ["model      " + "  ".join(f"{c:>10}" for c in columns)]
    for name, values in rows.items():
        cells = "  ".join(f"{values.get(c, float('nan')):>10.4f}" for c in columns)
        lines.append(f"{name:<10} {cells}")
    return "\n".join(lines)


@app.command()
def pipeline(
    input_dir: Annotated[Path, typer.Option("--input", help="batch directory")],
    run_id: Annotated[str | None, typer.Option(help="run id (default: new)")] = None,
) -> None:
    """Run validate -> features -> train -> publish (locally; no Prefect server needed).

    Without PREFECT_API_URL the run starts its own temporary Prefect server, which stops with
    the run, even when the run is killed.
    """
    _configure_prefect_defaults()
    load_settings()  # a wrong setting ends here in one line, not in a traceback from the flow
    from flows.local_server import local_prefect_api
    from flows.pipeline import PipelineResult, batch_pipeline

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
    typer.echo(_metrics_table(result.metrics))


@app.command()
def serve(
    host: Annotated[str | None, typer.Option(help="bind address")] = None,
    port: Annotated[int | None, typer.Option(help="TCP port")] = None,
    workers: Annotated[int, typer.Option(help="uvicorn worker processes")] = 1,
) -> None:
    """Serve the recommendations API (FastAPI on uvicorn)."""
    import uvicorn

    settings = load_settings()
    uvicorn.run("serving.api.main:app_from_environment", factory=True,
                host=host or settings.api_host,
                port=port or settings.api_port, workers=workers, log_level="info")


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
