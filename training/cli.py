"""`recsys models ...`: list, inspect and switch model versions (registered in recsys/cli.py)."""

from __future__ import annotations

import json
from typing import Annotated, Any

import typer

from recsys.errors import RecsysError
from recsys.settings import Settings

models_app = typer.Typer(help="Model registry: list, show, promote and roll back versions.",
                         no_args_is_help=True)

_METRICS = ("precision@10", "recall@10", "ndcg@10", "map")


def _fail(message: str) -> typer.Exit:
    typer.secho(f"error: {message}", fg=typer.colors.RED, err=True)
    return typer.Exit(1)


def _store_states(settings: Settings) -> dict[str, dict[str, Any]]:
    """version -> {status, active} from the serving store ({} when MongoDB is unreachable)."""
    from pymongo.errors import PyMongoError

    from serving.store import open_store

    try:
        with open_store(settings) as store:
            return {str(d["_id"]): {"status": d.get("status"), "active": d.get("active", False)}
                    for d in store.list_versions()}
    except PyMongoError as exc:
        typer.secho(f"warning: serving store unreachable ({exc.__class__.__name__}); "
                    "published/active columns are unknown", fg=typer.colors.YELLOW, err=True)
        return {}


@models_app.command("list")
def list_cmd(as_json: Annotated[bool, typer.Option("--json", help="JSON lines")] = False) -> None:
    """Every saved model version, newest first, with its holdout metrics and serving status."""
    from training.registry import list_models

    settings = Settings()
    models = list_models(settings.models_dir)
    states = _store_states(settings)
    rows = []
    for meta in models:
        metrics = meta.get("metrics", {})
        als = metrics.get("als", {})
        k = metrics.get("k", 10)
        # the columns are named @10; a model evaluated at another k shows its own @k values
        als = {name: als.get(name.replace("@10", f"@{k}")) for name in _METRICS}
        state = states.get(meta["version"], {})
        rows.append({"version": meta["version"], "created_at": meta.get("created_at"),
                     "active": bool(state.get("active")), "published": state.get("status"),
                     "snapshot": meta.get("feature_snapshot"),
                     "params": meta.get("params"), "k": k,
                     **{m: als.get(m) for m in _METRICS}})
    if as_json:
        for row in rows:
            typer.echo(json.dumps(row, default=str))
        return
    if not rows:
        typer.echo(f"no models in {settings.models_dir}")
        return
    typer.echo(f"{'':2}{'version':28} {'created_at':26} {'published':10} "
               + " ".join(f"{m:>12}" for m in _METRICS))
    for row in rows:
        mark = "* " if row["active"] else "  "
        values = " ".join(f"{row[m]:>12.4f}" if isinstance(row[m], float) else f"{'-':>12}"
                          for m in _METRICS)
        typer.echo(f"{mark}{row['version']:28} {str(row['created_at'])[:26]:26} "
                   f"{str(row['published'] or '-'):10} {values}")


@models_app.command("show")
def show_cmd(version: str) -> None:
    """The full metadata of VERSION (params, metrics, snapshot, data hashes, libraries, search)."""
    from training.registry import read_metadata

    settings = Settings()
    try:
        meta = read_metadata(settings.models_dir, version)
    except RecsysError as error:
        raise _fail(str(error)) from None
    state = _store_states(settings).get(version, {})
    meta["serving"] = {"published": state.get("status"), "active": bool(state.get("active"))}
    typer.echo(json.dumps(meta, indent=2, sort_keys=True, default=str))


@models_app.command("promote")
def promote_cmd(version: str) -> None:
    """Make VERSION the served model (publishing it first if it was never published)."""
    from serving.stage import publish_run
    from serving.store import STATUS_READY, open_store
    from training.registry import read_metadata
    from training.stage import SCORES_FILE

    settings = Settings()
    try:
        read_metadata(settings.models_dir, version)
        with open_store(settings) as store:
            doc = store.get_version(version)
            if doc is not None and doc.get("status") == STATUS_READY:
                previous = store.activate(version)
                typer.echo(f"active: {version} (previous: {previous})")
                return
        scores = settings.models_dir / version / SCORES_FILE
        if not scores.is_file():
            raise _fail(f"version {version!r} was never scored ({scores} missing): cannot publish")
        summary = publish_run(settings.models_dir / version, scores, settings=settings)
    except RecsysError as error:
        raise _fail(str(error)) from None
    typer.echo(f"published and active: {version} (previous: {summary.get('previous_version')})")


@models_app.command("rollback")
def rollback_cmd() -> None:
    """Re-activate the previously active version."""
    from serving.store import open_store

    settings = Settings()
    try:
        with open_store(settings) as store:
            current = store.active_version()
            restored = store.rollback()
    except RecsysError as error:
        raise _fail(str(error)) from None
    typer.echo(f"active: {restored} (was: {current})")
