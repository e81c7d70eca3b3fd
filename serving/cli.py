"""`recsys ops ...`: back up and restore the serving database, check health (mounted in
recsys/cli.py, which adds `ops prune`)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Literal

import typer

from recsys.errors import RecsysError
from recsys.settings import load_settings
from serving.backup import backup_database, default_backup_root, restore_database
from serving.health import check_health

ops_app = typer.Typer(help="Operations: backup, restore, prune, health.",
                      no_args_is_help=True)

MethodOption = Annotated[str, typer.Option(
    help="auto (mongodump/mongorestore when on PATH, else pymongo), tools or python")]


def _method(value: str) -> Literal["auto", "tools", "python"]:
    if value not in ("auto", "tools", "python"):
        typer.secho(f"error: --method must be auto, tools or python (got {value!r})",
                    fg=typer.colors.RED, err=True)
        raise typer.Exit(2)
    return value  # type: ignore[return-value]


def _fail(message: str) -> typer.Exit:
    typer.secho(f"error: {message}", fg=typer.colors.RED, err=True)
    return typer.Exit(1)


@ops_app.command("backup")
def backup_cmd(
    out: Annotated[Path | None, typer.Option(help="backup root (default <data_dir>/backups)")]
    = None,
    method: MethodOption = "auto",
) -> None:
    """Back up MONGODB_DB from MONGODB_URI into a new folder; print what was written (JSON)."""
    settings = load_settings()
    try:
        result = backup_database(settings.mongodb_uri, settings.mongodb_db,
                                 out or default_backup_root(settings), method=_method(method),
                                 timeout_ms=settings.mongodb_timeout_ms)
    except RecsysError as error:
        raise _fail(str(error)) from None
    typer.echo(json.dumps(result.to_dict(), indent=2))


@ops_app.command("restore")
def restore_cmd(
    backup_dir: Annotated[Path, typer.Argument(help="a backup folder (holds backup.json)")],
    db: Annotated[str | None, typer.Option("--db", help="target database (default: the one "
                                                        "backed up)")] = None,
    method: MethodOption = "auto",
    no_drop: Annotated[bool, typer.Option(
        "--no-drop", help="never replace a collection: refuse (before writing anything) when "
                          "one of the backup's collections already holds documents")] = False,
) -> None:
    """Verify a backup folder, restore it into MONGODB_URI (staged, then swapped in) and print
    the restored counts (JSON). A bad backup is reported in one line; the target is untouched."""
    settings = load_settings()
    try:
        result = restore_database(backup_dir, settings.mongodb_uri, db, method=_method(method),
                                  drop=not no_drop, timeout_ms=settings.mongodb_timeout_ms)
    except RecsysError as error:
        raise _fail(str(error)) from None
    typer.echo(json.dumps(result.to_dict(), indent=2))


@ops_app.command("health")
def health_cmd(
    api_url: Annotated[str | None, typer.Option(help="serving API base URL")] = None,
    prefect_url: Annotated[str | None, typer.Option(
        help="Prefect API URL, e.g. http://127.0.0.1:4200/api")] = None,
    min_free_gb: Annotated[float, typer.Option(help="free disk required under the data dir")]
    = 1.0,
) -> None:
    """Check MongoDB and the active version, disk, and the API / Prefect when given (JSON);
    exit status 1 when any check fails."""
    report = check_health(load_settings(), api_url=api_url, prefect_url=prefect_url,
                          min_free_gb=min_free_gb)
    typer.echo(json.dumps(report.to_dict(), indent=2))
    if not report.ok:
        raise typer.Exit(1)
