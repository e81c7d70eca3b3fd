"""`recsys models ...`: list, inspect and switch model versions (registered in recsys/cli.py)."""

from __future__ import annotations

import json
from typing import Annotated, Any

import typer

from recsys.errors import RecsysError
from recsys.settings import Settings, load_settings
from serving.publish import PublishResult, publish_model, rollback_model
from training.registry import list_models, read_metadata

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
    """Every saved model version, newest first, with its holdout metrics and serving status.

    A broken version (incomplete or unreadable) is listed last with its problem.
    """
    settings = load_settings()
    models = list_models(settings.models_dir)
    states = _store_states(settings)
    rows = []
    for info in models:
        meta = info.metadata
        metrics = meta.get("metrics", {})
        als = metrics.get("als", {})
        k = metrics.get("k", 10)
        # the columns are named @10; a model evaluated at another k shows its own @k values
        als = {name: als.get(name.replace("@10", f"@{k}")) for name in _METRICS}
        state = states.get(info.version, {})
        rows.append({"version": info.version, "created_at": meta.get("created_at"),
                     "active": bool(state.get("active")), "published": state.get("status"),
                     "snapshot": info.feature_snapshot,
                     "params": meta.get("params"), "k": k,
                     **{m: als.get(m) for m in _METRICS}, "problem": info.problem})
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
        typer.echo(f"{mark}{row['version']:28} {row['created_at']!s:26.26} "
                   f"{row['published'] or '-'!s:10} {values}")
        if row["problem"]:
            typer.secho(f"    broken: {row['problem']}", fg=typer.colors.YELLOW)


@models_app.command("show")
def show_cmd(version: str) -> None:
    """The full metadata of VERSION (params, metrics, snapshot, data hashes, libraries, search)."""
    settings = load_settings()
    try:
        meta = read_metadata(settings.models_dir, version)
    except RecsysError as error:
        raise _fail(str(error)) from None
    state = _store_states(settings).get(version, {})
    meta["serving"] = {"published": state.get("status"), "active": bool(state.get("active"))}
    typer.echo(json.dumps(meta, indent=2, sort_keys=True, default=str))


@models_app.command("promote")
def promote_cmd(version: str) -> None:
    """Serve VERSION (writing it into MongoDB first when it is not there) with its features.

    Goes through the one publish path (`serving.publish.publish_model`): waits for the publish
    lock, switches the model and the online features of its snapshot together.
    """
    settings = load_settings()
    try:
        result = publish_model(settings, version, holder=f"recsys models promote {version}")
    except RecsysError as error:
        raise _fail(str(error)) from None
    _echo_published(result, "published and active" if result.written else "active")


@models_app.command("rollback")
def rollback_cmd() -> None:
    """Serve the previously active version again (with its online features)."""
    settings = load_settings()
    try:
        result = rollback_model(settings, holder="recsys models rollback")
    except RecsysError as error:
        raise _fail(str(error)) from None
    typer.echo(f"active: {result.version} (was: {result.previous_version})")
    _echo_online(result)


def _echo_published(result: PublishResult, verb: str) -> None:
    detail = result.skipped or f"previous: {result.previous_version}"
    typer.echo(f"{verb}: {result.version} ({detail})")
    _echo_online(result)


def _echo_online(result: PublishResult) -> None:
    if result.online_switched:
        typer.echo(f"online features: snapshot {result.feature_snapshot}")
    else:
        typer.secho(f"warning: online features not switched (snapshot "
                    f"{result.feature_snapshot or 'unknown'} is neither online nor on disk)",
                    fg=typer.colors.YELLOW, err=True)
