"""Read one incoming batch directory, normalize it, and write it back as typed parquet.

A batch is a directory holding three tables, each as CSV *or* parquet (never both):

- ``users``: ``user_id`` plus any attribute columns;
- ``items``: ``item_id``, ``title``, optional ``genres`` (``|``-separated in CSV, a list in parquet);
- ``interactions``: ``user_id``, ``item_id``, ``timestamp`` (unix seconds or ISO-8601), optional
  ``rating``/``weight`` (numbers) and ``event_type``.

`read_batch` only enforces structure (files present, readable, required columns); the data
contract (nulls, uniqueness, ranges, references) is checked by `ingest.validate.validate_batch`
before `normalize_batch` converts types. Every structural problem raises
`recsys.errors.InputFileError` naming the file, the column and the rule.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import pandas as pd

from recsys.errors import InputFileError

logger = logging.getLogger(__name__)

DATASETS: tuple[str, ...] = ("users", "items", "interactions")
REQUIRED_COLUMNS: dict[str, tuple[str, ...]] = {
    "users": ("user_id",),
    "items": ("item_id", "title"),
    "interactions": ("user_id", "item_id", "timestamp"),
}
OPTIONAL_COLUMNS: dict[str, tuple[str, ...]] = {
    "users": (),
    "items": ("genres",),
    "interactions": ("rating", "weight", "event_type"),
}
ID_COLUMNS: dict[str, tuple[str, ...]] = {
    "users": ("user_id",),
    "items": ("item_id",),
    "interactions": ("user_id", "item_id"),
}
# Text columns read as strings in CSV whatever they look like.
TEXT_COLUMNS: dict[str, tuple[str, ...]] = {
    "users": (),
    "items": ("title", "genres"),
    "interactions": ("event_type",),
}
GENRE_SEPARATOR = "|"
# Unix seconds outside this window are almost certainly milliseconds or garbage.
TIMESTAMP_MIN = pd.Timestamp("1970-01-01", tz="UTC")
TIMESTAMP_MAX = pd.Timestamp("2100-01-01", tz="UTC")

_SNIFF_BYTES = 64 * 1024
_PARQUET_MAGIC = b"PAR1"


@dataclass
class Batch:
    """One batch: its three tables and the file each was read from."""

    input_dir: Path
    users: pd.DataFrame
    items: pd.DataFrame
    interactions: pd.DataFrame
    sources: dict[str, Path] = field(default_factory=dict)

    def frame(self, dataset: str) -> pd.DataFrame:
        """Return the table named `dataset` (``users``, ``items`` or ``interactions``)."""
        if dataset not in DATASETS:
            raise KeyError(dataset)
        return getattr(self, dataset)


# ---------------------------------------------------------------------------------------------
# Reading
# ---------------------------------------------------------------------------------------------


def read_batch(input_dir: Path) -> Batch:
    """Read ``users``, ``items`` and ``interactions`` from `input_dir`.

    Id columns come back as strings (``"007"`` stays ``"007"``); other columns as parsed.

    Raises:
        InputFileError: the directory or a file is missing, a table exists as both CSV and
            parquet, a file is empty, binary, badly encoded or unparseable, or a required
            column is missing.
    """
    input_dir = Path(input_dir)
    if not input_dir.exists():
        raise InputFileError(input_dir, "input directory does not exist", rule="batch_dir_exists")
    if not input_dir.is_dir():
        raise InputFileError(input_dir, "input path is not a directory", rule="batch_dir_exists")

    frames: dict[str, pd.DataFrame] = {}
    sources: dict[str, Path] = {}
    for dataset in DATASETS:
        path = _locate(input_dir, dataset)
        frame = _read_table(path, dataset)
        _check_required_columns(frame, path, dataset)
        frames[dataset] = frame
        sources[dataset] = path
        logger.info("read %s: %d rows, %d columns from %s", dataset, len(frame),
                    frame.shape[1], path)
    return Batch(input_dir=input_dir, sources=sources, **frames)


def _locate(input_dir: Path, dataset: str) -> Path:
    csv, parquet = input_dir / f"{dataset}.csv", input_dir / f"{dataset}.parquet"
    if csv.exists() and parquet.exists():
        raise InputFileError(
            input_dir / f"{dataset}.{{csv,parquet}}",
            f"both {csv.name} and {parquet.name} are present; keep exactly one",
            rule="one_file_per_table",
        )
    for path in (csv, parquet):
        if path.exists():
            if not path.is_file():
                raise InputFileError(path, "not a regular file", rule="file_exists")
            return path
    raise InputFileError(
        csv, f"missing: expected {csv.name} or {parquet.name} in {input_dir}", rule="file_exists"
    )


def _read_table(path: Path, dataset: str) -> pd.DataFrame:
    if path.stat().st_size == 0:
        raise InputFileError(path, "file is empty (0 bytes)", rule="non_empty_file")
    with path.open("rb") as fh:
        head = fh.read(_SNIFF_BYTES)
    if path.suffix == ".parquet":
        return _read_parquet(path, dataset, head)
    return _read_csv(path, dataset, head)


def _read_csv(path: Path, dataset: str, head: bytes) -> pd.DataFrame:
    if head.startswith(_PARQUET_MAGIC) or b"\x00" in head:
        raise InputFileError(path, "file looks binary (NUL bytes), not CSV text",
                             rule="csv_text")
    if not head.strip():
        raise InputFileError(path, "file is empty (whitespace only)", rule="non_empty_file")
    as_str = {c: str for c in (*ID_COLUMNS[dataset], *TEXT_COLUMNS[dataset])}
    try:
        frame = pd.read_csv(
            path,
            dtype=as_str,
            encoding="utf-8-sig",
            keep_default_na=False,  # "NA"/"null" are values; only empty cells are missing
            na_values=[""],
            skipinitialspace=True,
        )
    except UnicodeDecodeError as exc:
        raise InputFileError(
            path, f"not valid UTF-8 at byte {exc.start}: {exc.reason}", rule="utf8_encoding"
        ) from None
    except pd.errors.EmptyDataError:
        raise InputFileError(path, "file has no header and no rows", rule="non_empty_file") from None
    except (pd.errors.ParserError, ValueError) as exc:
        raise InputFileError(path, f"cannot parse CSV: {_first_line(exc)}",
                             rule="csv_parseable") from None
    frame.columns = [str(c).strip() for c in frame.columns]
    _check_delimiter(frame, path)
    return _ids_as_str(frame, dataset)


def _check_delimiter(frame: pd.DataFrame, path: Path) -> None:
    """A one-column CSV whose header holds ``;``, tab or ``|`` was written with that separator."""
    if frame.shape[1] != 1:
        return
    header = str(frame.columns[0])
    for separator, name in ((";", "';'"), ("\t", "tab"), ("|", "'|'")):
        if separator in header:
            raise InputFileError(
                path, f"wrong delimiter: the header {header!r} is separated by {name}; "
                      "CSV files must use ','", rule="csv_delimiter")


def _read_parquet(path: Path, dataset: str, head: bytes) -> pd.DataFrame:
    import pyarrow as pa
    import pyarrow.parquet as pq

    if not head.startswith(_PARQUET_MAGIC):
        raise InputFileError(path, "not a parquet file (missing PAR1 magic bytes)",
                             rule="parquet_readable")
    try:
        table = pq.read_table(path)
        frame = table.to_pandas()
    except (pa.ArrowException, OSError, ValueError) as exc:
        raise InputFileError(path, f"cannot read parquet: {_first_line(exc)}",
                             rule="parquet_readable") from None
    frame.columns = [str(c).strip() for c in frame.columns]
    return _ids_as_str(frame, dataset)


def _check_required_columns(frame: pd.DataFrame, path: Path, dataset: str) -> None:
    for column in REQUIRED_COLUMNS[dataset]:
        if column not in frame.columns:
            raise InputFileError(
                path,
                f"required column is missing (found: {', '.join(map(str, frame.columns))})",
                column=column,
                rule="required_column",
            )


def _ids_as_str(frame: pd.DataFrame, dataset: str) -> pd.DataFrame:
    for column in ID_COLUMNS[dataset]:
        if column in frame.columns:
            frame[column] = to_id_strings(frame[column])
    return frame


def to_id_strings(series: pd.Series) -> pd.Series:
    """Return `series` as strings, keeping nulls; integral floats lose their ``.0``."""
    if pd.api.types.is_string_dtype(series.dtype) and not pd.api.types.is_object_dtype(
        series.dtype
    ):
        return series
    return series.map(_id_to_str, na_action="ignore").astype("str")


def _id_to_str(value: Any) -> str:
    if isinstance(value, bytes):
        return value.decode("utf-8", errors="replace")
    if isinstance(value, float) and math.isfinite(value) and value.is_integer():
        return str(int(value))
    return str(value)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


# ---------------------------------------------------------------------------------------------
# Normalizing
# ---------------------------------------------------------------------------------------------


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

    text = series.map(_as_text, na_action="ignore")
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
    """
    users = batch.users.copy()
    users = _ids_as_str(users, "users")

    items = _ids_as_str(batch.items.copy(), "items")
    items["title"] = _to_text(items["title"])
    if "genres" in items.columns:
        items["genres"] = items["genres"].map(parse_genres).astype("object")
    else:
        items["genres"] = pd.Series([[] for _ in range(len(items))], index=items.index,
                                    dtype="object")

    inter = _ids_as_str(batch.interactions.copy(), "interactions")
    inter["timestamp"] = parse_timestamps(inter["timestamp"])
    for column in ("rating", "weight"):
        if column in inter.columns:
            inter[column] = pd.to_numeric(inter[column], errors="coerce").astype("float64")
        else:
            inter[column] = pd.Series(float("nan"), index=inter.index, dtype="float64")
    if "event_type" in inter.columns:
        inter["event_type"] = _to_text(inter["event_type"])
    else:
        inter["event_type"] = pd.Series(pd.NA, index=inter.index, dtype="str")
    return replace(batch, users=users, items=items, interactions=inter)


def _to_text(series: pd.Series) -> pd.Series:
    return series.map(_as_text, na_action="ignore").astype("str")


# ---------------------------------------------------------------------------------------------
# Writing
# ---------------------------------------------------------------------------------------------

INTERACTION_COLUMNS: tuple[str, ...] = (
    "user_id", "item_id", "timestamp", "rating", "weight", "event_type",
)


def write_batch_parquet(batch: Batch, out_dir: Path) -> dict[str, Path]:
    """Write the normalized batch to ``out_dir/{users,items,interactions}.parquet``.

    `batch` should come from `normalize_batch` (it is normalized again here, which is a no-op on
    normalized frames). Interactions use a fixed schema: ``user_id string, item_id string,
    timestamp timestamp[us, tz=UTC], rating double, weight double, event_type string``, followed
    by any extra input columns.

    Returns:
        ``{"users": path, "items": path, "interactions": path}``.
    """
    import pyarrow as pa
    import pyarrow.parquet as pq

    batch = normalize_batch(batch)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)

    string = pa.string()
    fixed = {
        "users": {"user_id": string},
        "items": {"item_id": string, "title": string, "genres": pa.list_(string)},
        "interactions": {
            "user_id": string,
            "item_id": string,
            "timestamp": pa.timestamp("us", tz="UTC"),
            "rating": pa.float64(),
            "weight": pa.float64(),
            "event_type": string,
        },
    }
    paths: dict[str, Path] = {}
    for dataset in DATASETS:
        frame = batch.frame(dataset)
        table = _to_arrow(frame, fixed[dataset])
        path = out_dir / f"{dataset}.parquet"
        tmp = path.with_suffix(".parquet.tmp")
        pq.write_table(table, tmp)
        tmp.replace(path)
        paths[dataset] = path
        logger.info("wrote %s: %d rows to %s", dataset, table.num_rows, path)
    return paths


def _to_arrow(frame: pd.DataFrame, fixed: dict[str, Any]) -> Any:
    import pyarrow as pa

    arrays, fields = [], []
    for column, type_ in fixed.items():
        values = frame[column]
        if pa.types.is_list(type_):
            data = [list(v) for v in values]
        elif pa.types.is_string(type_):
            data = [None if _is_na_scalar(v) else str(v) for v in values.astype("object")]
        elif pa.types.is_timestamp(type_):
            arrays.append(pa.array(values, type=type_, from_pandas=True))
            fields.append(pa.field(column, type_))
            continue
        else:
            data = values
        arrays.append(pa.array(data, type=type_, from_pandas=True))
        fields.append(pa.field(column, type_))
    extra = [c for c in frame.columns if c not in fixed]
    if extra:
        rest = pa.Table.from_pandas(frame[extra], preserve_index=False)
        for name, col in zip(rest.column_names, rest.columns, strict=True):
            if pa.types.is_large_string(col.type):  # pandas 3 "str" -> large_string
                col = col.cast(pa.string())
            arrays.append(col)
            fields.append(pa.field(name, col.type))
    return pa.Table.from_arrays(arrays, schema=pa.schema(fields))
