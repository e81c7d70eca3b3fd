"""The feature store's entry points for flows and the CLI, as plain typed functions.

* `build_features_as_of` -- a point-in-time snapshot over every batch of the raw store
  (`ingest.raw_store`; the pipeline, weekly retrain, backfills: events after `as_of` are never
  read), built per user partition through the caller's mapper.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from features.snapshot import Manifest, build_views
from features.sources import sources_from_store
from recsys.partitions import Mapper, serial_map
from recsys.progress import ProgressCallback
from recsys.settings import Settings


def build_params(settings: Settings) -> dict[str, Any]:
    """Build parameters taken from settings (the rest are the registry's defaults)."""
    return {"half_life_days": settings.feature_half_life_days}


def build_features_as_of(as_of: datetime | None, *, snapshot_id: str, settings: Settings,
                         progress: ProgressCallback | None = None,
                         mapper: Mapper = serial_map, partitions: int | None = None
                         ) -> Manifest:
    """Build a snapshot from every batch in the raw store, using only events at or before as_of.

    Args:
        as_of: cut-off (naive means UTC); None uses every event (the snapshot's as-of is then the
            latest event time).
        snapshot_id: the snapshot's id (must not exist yet).
        settings: `store_dir` to read, `features_dir` to write, build parameters,
            `partition_count` (the user parts, unless `partitions` is given).
        progress: told after each view is written (`build_views`).
        mapper: runs the per-part work (`recsys.partitions.serial_map`: here, in turn).
        partitions: user parts; None: `settings.partition_count`. The snapshot's contents do
            not depend on it.

    Raises:
        FeatureStoreError: the store has no batch visible at `as_of`.
        FileExistsError: the snapshot id is taken.
    """
    sources = sources_from_store(settings.store_dir, as_of)
    # parts that run concurrently (one per single-threaded Dask worker) get one DuckDB thread
    # each, instead of every part taking all of the host's cores
    threads = None if mapper is serial_map else 1
    return build_views(sources, features_root=settings.features_dir, snapshot_id=snapshot_id,
                       as_of=as_of, params=build_params(settings), progress=progress,
                       partitions=partitions or settings.partition_count, mapper=mapper,
                       threads=threads)
