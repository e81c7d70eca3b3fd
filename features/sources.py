"""The input files of a feature build: one validated batch, or the raw store as of a time.

`SourceSet` is plain data (paths, ids, hashes), so a build's plan can be written to a file
and read by part functions on other workers (`features.parts`).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from ingest.raw_store import (
    DATASETS,
    batch_content_hash,
    events_may_repeat,
    list_batches,
    store_files,
)
from recsys.errors import FeatureStoreError


@dataclass(frozen=True, kw_only=True)
class SourceSet:
    """The input files of a build.

    Attributes:
        users, items, interactions: parquet files (sorted).
        batches: the batches they belong to (id, content hash, per-file hashes).
        batch_order: interaction file (as in `interactions`) -> ingestion order of its batch;
            for an event carried by several batches the greatest order wins. Empty: one batch.
        events_distinct: no event occurs twice among the rows (the raw store knows it from
            its markers, `ingest.raw_store.events_may_repeat`); the build then skips grouping
            the rows by event identity.
        latest_wins: entity files carry the raw store's bookkeeping columns; dedupe by them.
        description: per dataset, what goes into the manifest's `sources`.
        latest_event: ISO time of the latest event among `interactions` when the sources
            know it without a scan (the raw store's markers, every partition read); None
            otherwise. It is the as-of of a build without a cut-off.
    """

    users: list[Path]
    items: list[Path]
    interactions: list[Path]
    batches: list[dict[str, Any]]
    latest_wins: bool
    description: dict[str, dict[str, Any]]
    batch_order: dict[str, int] = field(default_factory=dict)
    events_distinct: bool = False
    latest_event: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-able data (paths as strings), the inverse of `from_dict`."""
        data = asdict(self)
        for name in DATASETS:
            data[name] = [str(p) for p in data[name]]
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> SourceSet:
        data = dict(data)
        for name in DATASETS:
            data[name] = [Path(p) for p in data[name]]
        return cls(**data)


def _iso(ts: datetime | None) -> str | None:
    return ts.astimezone(UTC).isoformat() if ts is not None else None


def utc(ts: datetime) -> datetime:
    """`ts` in UTC; a naive value is taken to be UTC already (as the CLI does)."""
    return ts.replace(tzinfo=UTC) if ts.tzinfo is None else ts.astimezone(UTC)


def sources_from_raw_files(raw_files: dict[str, Path]) -> SourceSet:
    """Sources for one validated batch's normalized files (no raw store involved)."""
    content_hash, per_file = batch_content_hash(raw_files)
    return SourceSet(
        users=[Path(raw_files["users"])], items=[Path(raw_files["items"])],
        interactions=[Path(raw_files["interactions"])],
        batches=[{"batch_id": content_hash[:16], "content_hash": content_hash,
                  "source_hashes": per_file}],
        latest_wins=False,
        description={name: {"path": str(raw_files[name]), "sha256": per_file[name]}
                     for name in DATASETS},
    )


def sources_from_store(raw_root: Path, as_of: datetime | None) -> SourceSet:
    """Sources from the raw store: all committed batches, interaction partitions up to as-of.

    Raises:
        FeatureStoreError: the store holds no batch (or none visible at as-of).
    """
    batches = list_batches(raw_root)
    if as_of is not None:
        cut = utc(as_of)
        batches = [b for b in batches if datetime.fromisoformat(b.effective_ts) <= cut]
    if not batches:
        raise FeatureStoreError(f"raw store {raw_root} has no batch"
                                + (f" visible at {_iso(as_of)}" if as_of else "")
                                + " (ingest one with ingest.stage.ingest_batch)")
    until = utc(as_of).date() if as_of is not None else None
    per_batch = {b.seq: store_files(raw_root, "interactions", batches=[b], until=until)
                 for b in batches}
    inter = sorted(path for paths in per_batch.values() for path in paths)
    order = {str(path): seq for seq, paths in per_batch.items() for path in paths}
    files = {"users": store_files(raw_root, "users", batches=batches),
             "items": store_files(raw_root, "items", batches=batches),
             "interactions": inter}
    # Without a cut-off every partition is read, so the markers' latest event is the data's
    # (a marker from before `max_event_ts` was recorded leaves it to a scan).
    latest = None
    if as_of is None and all(b.max_event_ts or not b.rows.get("interactions") for b in batches):
        stamps = [datetime.fromisoformat(b.max_event_ts) for b in batches if b.max_event_ts]
        latest = max(stamps).astimezone(UTC).isoformat() if stamps else None
    return SourceSet(
        users=files["users"], items=files["items"], interactions=inter,
        batches=[{"batch_id": b.batch_id, "content_hash": b.content_hash, "seq": b.seq,
                  "source_hashes": b.source_hashes} for b in batches],
        latest_wins=True,
        description={name: {"store": str(raw_root), "files": len(files[name])}
                     for name in DATASETS},
        batch_order=order,
        events_distinct=not events_may_repeat(batches),
        latest_event=latest,
    )
