"""`recsys features ...`: the feature store at the terminal.

    recsys features build [--input DIR] [--as-of TIMESTAMP] [--snapshot-id ID]
    recsys features list
    recsys features describe VIEW [--snapshot ID]
    recsys features diff SNAPSHOT_A SNAPSHOT_B
    recsys features materialize SNAPSHOT
    recsys features prune [--keep K] [--dry-run]
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any

import typer

from recsys.errors import RecsysError
from recsys.ids import new_run_id
from recsys.settings import Settings, load_settings

features_app = typer.Typer(help="Feature store: point-in-time builds, snapshots, online store.",
                           no_args_is_help=True)


def _fail(message: str) -> typer.Exit:
    typer.secho(f"error: {message}", fg=typer.colors.RED, err=True)
    return typer.Exit(1)


def parse_as_of(value: str) -> datetime:
    """ISO-8601 date or date-time; a value without a zone is UTC. A bare date means its end.

    `2024-03-01` -> 2024-03-01T23:59:59.999999Z (events *on* that day count),
    `2024-03-01T12:00` -> 12:00 UTC, `2024-03-01T12:00+02:00` -> 10:00 UTC.
    """
    try:
        if len(value) == 10:
            day = datetime.fromisoformat(value)
            return day.replace(hour=23, minute=59, second=59, microsecond=999999, tzinfo=UTC)
        parsed = datetime.fromisoformat(value)
    except ValueError:
        raise typer.BadParameter(f"{value!r} is not an ISO-8601 date or date-time") from None
    return parsed.replace(tzinfo=UTC) if parsed.tzinfo is None else parsed.astimezone(UTC)


def _new_snapshot_id(as_of: datetime | None) -> str:
    """`asof<cut-off>-<run id>` or `latest-<run id>`: unique even for builds in the same second."""
    run = new_run_id()
    return f"asof{as_of.strftime('%Y%m%dT%H%M%SZ')}-{run}" if as_of else f"latest-{run}"


@features_app.command("build")
def build_cmd(
    input_dir: Annotated[Path | None, typer.Option(
        "--input", help="batch directory to validate and ingest into the raw store first")] = None,
    as_of: Annotated[str | None, typer.Option(
        help="only events at or before this UTC time (ISO date or date-time)")] = None,
    snapshot_id: Annotated[str | None, typer.Option(help="snapshot id (default: generated)")
                           ] = None,
) -> None:
    """Build every feature view from the raw store, as of a point in time."""
    from features.stage import build_features_as_of
    from ingest.stage import ingest_batch

    settings = load_settings()
    cutoff = parse_as_of(as_of) if as_of else None
    sid = snapshot_id or _new_snapshot_id(cutoff)
    try:
        if input_dir is not None:
            stored = ingest_batch(input_dir, run_id=f"features-{sid}", settings=settings).stored
            typer.echo(f"batch {stored.batch_id}: "
                       + ("already in the raw store" if stored.skipped else
                          f"ingested {stored.rows} into {settings.store_dir}"))
        manifest = build_features_as_of(cutoff, snapshot_id=sid, settings=settings)
    except (RecsysError, FileExistsError) as error:
        raise _fail(str(error)) from None
    typer.echo(f"snapshot {manifest.snapshot_id} as of {manifest.as_of} "
               f"({len(manifest.batches)} batch(es), {manifest.build_seconds:.1f}s)")
    for name, view in manifest.views.items():
        typer.echo(f"  {name:<14} v{view.version}  {view.rows:>10,} rows  {view.path}")


@features_app.command("list")
def list_cmd() -> None:
    """The registered views and the snapshots on disk (newest last)."""
    from features.registry import REGISTRY
    from features.snapshot import list_manifests

    settings = load_settings()
    typer.echo("views:")
    for view in REGISTRY.values():
        typer.echo(f"  {view.name:<14} entity={view.entity:<9} version={view.version} "
                   f"owner={view.owner}  {view.description}")
    manifests = list_manifests(settings.features_dir)
    typer.echo(f"snapshots in {settings.features_dir}: {len(manifests)}")
    for m in manifests:
        rows = ", ".join(f"{n}={v.rows:,}" for n, v in m.views.items())
        typer.echo(f"  {m.snapshot_id:<32} as_of={m.as_of}  built={m.created_at[:19]}  {rows}")


def _latest_snapshot(settings: Settings) -> str | None:
    from features.snapshot import list_manifests

    manifests = list_manifests(settings.features_dir)
    return manifests[-1].snapshot_id if manifests else None


def column_stats(path: Path) -> list[dict[str, Any]]:
    """DuckDB's SUMMARIZE of a parquet file: per column type, min, max, nulls, distinct, mean."""
    from ingest.raw_store import connect

    con = connect()
    try:
        lit = "'" + str(path).replace("'", "''") + "'"
        rel = con.sql(f"SUMMARIZE SELECT * FROM read_parquet({lit}, hive_partitioning = false)")
        names = rel.columns
        return [dict(zip(names, row, strict=True)) for row in rel.fetchall()]
    finally:
        con.close()


@features_app.command("describe")
def describe_cmd(
    view_name: Annotated[str, typer.Argument(metavar="VIEW", help="view name")],
    snapshot: Annotated[str | None, typer.Option(help="snapshot id (default: newest)")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="machine-readable output")] = False,
) -> None:
    """A view's definition, and its row count and column statistics in a snapshot."""
    from features.registry import get_view
    from features.snapshot import load_manifest

    settings = load_settings()
    try:
        view = get_view(view_name)
    except KeyError as error:
        raise _fail(str(error.args[0])) from None
    info: dict[str, Any] = {"definition": view.describe()}
    sid = snapshot or _latest_snapshot(settings)
    if sid is not None:
        try:
            manifest = load_manifest(settings.features_dir, sid)
        except RecsysError as error:
            raise _fail(str(error)) from None
        if view_name in manifest.views:
            snap = manifest.views[view_name]
            info["snapshot"] = {"id": sid, "as_of": manifest.as_of, "rows": snap.rows,
                                "version": snap.version, "path": snap.path,
                                "stats": column_stats(Path(snap.path))}
    if as_json:
        typer.echo(json.dumps(info, indent=2, default=str))
        return
    d = info["definition"]
    typer.echo(f"{d['name']} (entity {d['entity']}, keys {d['keys']}, version {d['version']}, "
               f"owner {d['owner']})\n  {d['description']}")
    if d["passthrough"]:
        typer.echo(f"  + the attribute columns of {d['passthrough']}")
    for col in d["columns"]:
        typer.echo(f"  {col['name']:<18} {col['type']:<38} {col['description']}")
    if "snapshot" in info:
        s = info["snapshot"]
        stale = "" if s["version"] == d["version"] else "  (built by an older definition)"
        typer.echo(f"snapshot {s['id']} (as of {s['as_of']}): {s['rows']:,} rows, "
                   f"version {s['version']}{stale}")
        typer.echo(f"  {'column':<18} {'type':<12} {'min':>20} {'max':>20} {'avg':>12} "
                   f"{'nulls%':>7} {'distinct':>9}")
        for st in s["stats"]:
            typer.echo(f"  {st['column_name']:<18} {str(st['column_type'])[:12]:<12} "
                       f"{str(st['min'])[:20]:>20} {str(st['max'])[:20]:>20} "
                       f"{str(st['avg'] if st['avg'] is not None else '')[:12]:>12} "
                       f"{float(st['null_percentage'] or 0):>7.2f} "
                       f"{st['approx_unique']:>9}")


@features_app.command("diff")
def diff_cmd(
    snapshot_a: Annotated[str, typer.Argument(help="older snapshot id")],
    snapshot_b: Annotated[str, typer.Argument(help="newer snapshot id")],
    as_json: Annotated[bool, typer.Option("--json", help="machine-readable output")] = False,
) -> None:
    """What changed between two snapshots: versions, rows, schema, keys, column means."""
    from features.diff import diff_snapshots
    from features.snapshot import load_manifest

    settings = load_settings()
    try:
        a = load_manifest(settings.features_dir, snapshot_a)
        b = load_manifest(settings.features_dir, snapshot_b)
    except RecsysError as error:
        raise _fail(str(error)) from None
    report = diff_snapshots(a, b)
    if as_json:
        typer.echo(json.dumps(report, indent=2, default=str))
        return
    typer.echo(f"{snapshot_a} (as of {a.as_of}) -> {snapshot_b} (as of {b.as_of})")
    for name, v in report["views"].items():
        typer.echo(f"{name}:")
        if v.get("only_in"):
            typer.echo(f"  only in {v['only_in']}")
            continue
        version = ("unchanged" if v["version_a"] == v["version_b"]
                   else f"{v['version_a']} -> {v['version_b']}")
        typer.echo(f"  version {version}; rows {v['rows_a']:,} -> {v['rows_b']:,} "
                   f"({v['rows_b'] - v['rows_a']:+,})")
        typer.echo(f"  keys: {v['keys_added']:,} added, {v['keys_removed']:,} removed, "
                   f"{v['keys_common']:,} common")
        for change in v["schema_changes"]:
            typer.echo(f"  schema: {change}")
        for col, m in v["means"].items():
            if m["a"] != m["b"]:
                typer.echo(f"  mean {col}: {m['a']} -> {m['b']}")


@features_app.command("materialize")
def materialize_cmd(
    snapshot: Annotated[str | None, typer.Argument(help="snapshot id (default: newest)")] = None,
) -> None:
    """Write a snapshot's user and item features to MongoDB ahead of a publish.

    The online store switches to a snapshot only when a model that uses it is published
    (`recsys models promote`, the pipeline), so features and model change together.
    """
    from features.online import write_snapshot
    from recsys.mongo import open_database
    from serving.lock import publish_lock
    from features.snapshot import load_manifest

    settings = load_settings()
    sid = snapshot or _latest_snapshot(settings)
    if sid is None:
        raise _fail(f"no feature snapshot in {settings.features_dir}")
    try:
        manifest = load_manifest(settings.features_dir, sid)
        # under the publish lock: a publish cleans up half-written snapshots while it holds it
        with open_database(settings) as db, publish_lock(
                db, settings, holder=f"recsys features materialize {sid}"):
            summary = write_snapshot(db, manifest, batch_size=settings.publish_batch_size)
    except RecsysError as error:
        raise _fail(str(error)) from None
    state = "written" if summary["rewritten"] else "already written"
    typer.echo(f"online features: snapshot {sid} {state} ({summary['counts']}); it goes live "
               "when a model that uses it is published")


@features_app.command("prune")
def prune_cmd(
    keep: Annotated[int | None, typer.Option(help="snapshots to keep (default: setting)")] = None,
    dry_run: Annotated[bool, typer.Option(help="only say what would be deleted")] = False,
) -> None:
    """Delete old snapshots, keeping the newest K and every one a model references."""
    from features.retention import prune_snapshots
    from flows.housekeeping import protected_snapshots

    settings = load_settings()
    try:
        deleted = prune_snapshots(
            settings.features_dir, protect=protected_snapshots(settings), dry_run=dry_run,
            keep=settings.feature_keep_snapshots if keep is None else keep)
    except (RecsysError, ValueError) as error:
        raise _fail(str(error)) from None
    verb = "would delete" if dry_run else "deleted"
    typer.echo(f"{verb} {len(deleted)} snapshot(s)" + (f": {', '.join(deleted)}" if deleted
                                                         else ""))
