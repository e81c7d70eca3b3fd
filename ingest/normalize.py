"""Convert a validated batch to the canonical types every later stage reads.

- ids: strings; ``items.title`` and ``interactions.event_type``: strings (nulls kept);
- ``interactions.timestamp``: ``datetime64[us, UTC]`` from unix seconds or ISO-8601;
- ``interactions.rating`` / ``weight``: ``float64`` (unparseable -> NaN);
- ``items.genres``: ``list[str]`` (``|``-separated text or a list; ``[]`` when missing).

`parse_timestamps` is also what validation uses to find unparseable and out-of-range times, so
what passes validation converts without loss. Chunked tables (`Batch.chunked`) are normalized
chunk by chunk with `normalize_frame`, as a whole table would be.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pandas as pd

from ingest.id_columns import ids_as_str
from ingest.reader import DATASETS, Batch

GENRE_SEPARATOR = "|"
# Unix seconds outside this window are almost certainly milliseconds or garbage.
TIMESTAMP_MIN = pd.Timestamp("1970-01-01", tz="UTC")
TIMESTAMP_MAX = pd.Timestamp("2100-01-01", tz="UTC")



def parse_timestamps(series: pd.Series) -> pd.Series:
    """Parse unix seconds (int/float/numeric strings) or ISO-8601 strings to UTC datetimes.

    Timezone-aware values are converted to UTC, naive ones are taken as UTC. Values that cannot
    be parsed become ``NaT`` (validation reports them; see ``_timestamp_unparseable``).
    """
    target = "datetime64[us, UTC]"
    if isinstance(series.dtype, pd.DatetimeTZDtype):
        return series.dt.tz_convert("UTC").astype(target)
    if pd.api.types.is_datetime64_dtype(series.dtype):
        return series.dt.tz_localize("UTC").astype(target)
    if pd.api.types.is_bool_dtype(series.dtype):
        return pd.Series(pd.NaT, index=series.index, dtype=target)
    if pd.api.types.is_numeric_dtype(series.dtype):
        return _from_unix(series.astype("float64")).astype(target)

    text = _as_text_values(series)
    numeric = pd.to_numeric(text, errors="coerce")
    out = _from_unix(numeric).astype(target)
    rest = numeric.isna() & text.notna()
    if rest.any():
        iso = pd.to_datetime(text[rest].astype("str"), format="ISO8601", utc=True,
                             errors="coerce")
        out.loc[rest] = iso.astype(target)
    return out


def _as_text(value: Any) -> Any:
    if isinstance(value, pd.Timestamp):
        return value.isoformat()
    return value if isinstance(value, str) else str(value)


def _as_text_values(series: pd.Series) -> pd.Series:
    """`_as_text` of every non-null value: text columns as they are, numbers via ``str``,
    value by value only for columns of mixed objects (timestamps among text, say)."""
    dtype = series.dtype
    if pd.api.types.is_string_dtype(dtype) and not pd.api.types.is_object_dtype(dtype):
        return series
    if pd.api.types.is_numeric_dtype(dtype):  # bool included: str(True) == "True"
        return series.astype("object").where(series.isna(), series.astype("str"))
    if pd.api.types.infer_dtype(series, skipna=True) in ("string", "empty"):
        return series
    return series.map(_as_text, na_action="ignore")


def _from_unix(seconds: pd.Series) -> pd.Series:
    # Via integer microseconds: exact for sub-second floats, and values that are really
    # milliseconds (1.7e12) still parse (to a far-future date that validation flags as out of
    # range) instead of overflowing. Beyond ~9e12 s even microseconds overflow int64.
    seconds = seconds.astype("float64")
    micros = (seconds.where(seconds.abs() < 9e12) * 1_000_000).round().astype("Int64")
    return pd.to_datetime(micros, unit="us", utc=True, errors="coerce")


def parse_genres(value: Any) -> list[str]:
    """``"Action|Comedy"`` or a list -> ``["Action", "Comedy"]``; null -> ``[]``."""
    if value is None:
        return []
    if isinstance(value, str):
        parts = value.split(GENRE_SEPARATOR)
    elif hasattr(value, "__iter__") and not isinstance(value, bytes | dict):
        parts = [str(v) for v in value if v is not None and not _is_na_scalar(v)]
    elif _is_na_scalar(value):
        return []
    else:
        parts = [str(value)]
    return [p.strip() for p in parts if p and p.strip()]


def _is_na_scalar(value: Any) -> bool:
    try:
        return bool(pd.isna(value))
    except (TypeError, ValueError):
        return False


def normalize_batch(batch: Batch) -> Batch:
    """Return a copy of `batch` with canonical types (call after validation).

    - ids: strings; ``items.title`` and ``interactions.event_type``: strings (nulls kept);
    - ``interactions.timestamp``: ``datetime64[us, UTC]``;
    - ``interactions.rating`` / ``weight``: ``float64`` (unparseable -> NaN);
    - ``items.genres``: ``list[str]`` (``[]`` when missing or null);
    - optional columns absent from the input are added (nulls; ``genres`` as ``[]``).

    Chunked tables (`Batch.chunked`) are normalized chunk by chunk with `normalize_frame`.
    """
    frames = {dataset: normalize_frame(dataset, batch.frame(dataset)) for dataset in DATASETS}
    return replace(batch, **frames)


def normalize_frame(dataset: str, frame: pd.DataFrame) -> pd.DataFrame:
    """A normalized copy of one table (or one chunk of it); see `normalize_batch`."""
    frame = ids_as_str(frame.copy(), dataset)
    if dataset == "items":
        frame["title"] = _to_text(frame["title"])
        if "genres" in frame.columns:
            frame["genres"] = frame["genres"].map(parse_genres).astype("object")
        else:
            frame["genres"] = pd.Series([[] for _ in range(len(frame))], index=frame.index,
                                        dtype="object")
    elif dataset == "interactions":
        frame["timestamp"] = parse_timestamps(frame["timestamp"])
        for column in ("rating", "weight"):
            if column in frame.columns:
                frame[column] = pd.to_numeric(frame[column], errors="coerce").astype("float64")
            else:
                frame[column] = pd.Series(float("nan"), index=frame.index, dtype="float64")
        if "event_type" in frame.columns:
            frame["event_type"] = _to_text(frame["event_type"])
        else:
            frame["event_type"] = pd.Series(pd.NA, index=frame.index, dtype="str")
    return frame


def _to_text(series: pd.Series) -> pd.Series:
    return _as_text_values(series).astype("str")
