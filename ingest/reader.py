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

``read_batch(..., chunk_rows=N)`` leaves an interactions file of more than N rows on disk:
`TableChunks` reads it N rows at a time (parquet row batches, pandas CSV chunks) with the same
typing and errors, `normalize_frame` and `arrow_table` convert each chunk as a whole table
would be. Conversions are vectorised (pandas/pyarrow); value-by-value Python is left only for
item genres and for columns of mixed Python objects.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
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
    """One batch: its three tables and the file each was read from.

    A table too large to hold whole (``read_batch(..., chunk_rows=N)``) is in `chunked` instead:
    its frame here is empty (columns only) and `TableChunks` reads it chunk by chunk.
    """

    input_dir: Path
    users: pd.DataFrame
    items: pd.DataFrame
    interactions: pd.DataFrame
    sources: dict[str, Path] = field(default_factory=dict)
    chunked: dict[str, TableChunks] = field(default_factory=dict)

    def frame(self, dataset: str) -> pd.DataFrame:
        """Return the table named `dataset` (``users``, ``items`` or ``interactions``)."""
        if dataset not in DATASETS:
            raise KeyError(dataset)
        return getattr(self, dataset)


# ---------------------------------------------------------------------------------------------
# Reading
# ---------------------------------------------------------------------------------------------


def read_batch(input_dir: Path, *, chunk_rows: int | None = None) -> Batch:
    """Read ``users``, ``items`` and ``interactions`` from `input_dir`.

    Id columns come back as strings (``"007"`` stays ``"007"``); other columns as parsed.

    Args:
        input_dir: the batch directory.
        chunk_rows: when given, an ``interactions`` file of more rows than this is not read
            whole: its structure (header, required columns) is checked, ``Batch.interactions``
            holds its columns only and ``Batch.chunked["interactions"]`` reads it in chunks of
            `chunk_rows` rows. Users and items are always read whole.

    Raises:
        InputFileError: the directory or a file is missing, a table exists as both CSV and
            parquet, a file is empty, binary, badly encoded or unparseable, or a required
            column is missing. (Errors further down a chunked file surface while its chunks
            are read.)
    """
    input_dir = Path(input_dir)
    if not input_dir.exists():
        raise InputFileError(input_dir, "input directory does not exist", rule="batch_dir_exists")
    if not input_dir.is_dir():
        raise InputFileError(input_dir, "input path is not a directory", rule="batch_dir_exists")

    frames: dict[str, pd.DataFrame] = {}
    sources: dict[str, Path] = {}
    chunked: dict[str, TableChunks] = {}
    for dataset in DATASETS:
        path = _locate(input_dir, dataset)
        sources[dataset] = path
        if (chunk_rows is not None and dataset in CHUNKABLE_DATASETS
                and count_rows(path) > chunk_rows):
            frame = _read_header(path, dataset)
            chunked[dataset] = TableChunks(path=path, dataset=dataset, chunk_rows=chunk_rows)
            logger.info("%s: %s is read in chunks of %d rows (%d columns)", dataset, path,
                        chunk_rows, frame.shape[1])
        else:
            frame = _read_table(path, dataset)
            _check_required_columns(frame, path, dataset)
            logger.info("read %s: %d rows, %d columns from %s", dataset, len(frame),
                        frame.shape[1], path)
        frames[dataset] = frame
    return Batch(input_dir=input_dir, sources=sources, chunked=chunked, **frames)


# Tables that may be streamed: users and items are always whole (interactions reference them).
CHUNKABLE_DATASETS: tuple[str, ...] = ("interactions",)
_COUNT_BLOCK_BYTES = 16 * 1024 * 1024


@dataclass(frozen=True)
class TableChunks:
    """One table file read in chunks of at most `chunk_rows` rows, in file order.

    Each iteration reads the file again. Chunks are typed as `read_batch` types a whole table
    (ids as strings, the same CSV options and errors); their index is the row number in the
    file, so index labels are global (a parquet file written by pandas keeps its stored index,
    as a whole read does). CSV columns are inferred per chunk, as pandas infers them per
    internal block of a large whole read: in a column mixing numbers and text, a value keeps
    the type its chunk gave it.
    """

    path: Path
    dataset: str
    chunk_rows: int

    def __iter__(self) -> Iterator[pd.DataFrame]:
        return self.iter_columns(None)

    def iter_columns(self, columns: Sequence[str] | None) -> Iterator[pd.DataFrame]:
        """Chunks holding only `columns` (names as `read_batch` reports them; all when None).

        Raises:
            InputFileError: the file cannot be read or parsed (raised when reached).
        """
        head = _sniff(self.path)
        if self.path.suffix == ".parquet":
            return _parquet_chunks(self.path, self.dataset, head, self.chunk_rows, columns)
        return _csv_chunks(self.path, self.dataset, head, self.chunk_rows, columns)


def count_rows(path: Path) -> int:
    """Rows of a table file without parsing it: exact for parquet (footer metadata); for CSV
    the lines after the header, an upper bound (quoted line breaks, blank lines). 0 when the
    file cannot be read (the reader then reports why)."""
    path = Path(path)
    try:
        if path.suffix == ".parquet":
            import pyarrow.parquet as pq

            return int(pq.ParquetFile(path).metadata.num_rows)
        lines, last = 0, b"\n"
        with path.open("rb") as fh:
            while block := fh.read(_COUNT_BLOCK_BYTES):
                lines += block.count(b"\n")
                last = block[-1:]
        return max(0, lines + (last != b"\n") - 1)
    except Exception:  # noqa: BLE001 - unreadable files are the reader's to report
        return 0


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


def _sniff(path: Path) -> bytes:
    if path.stat().st_size == 0:
        raise InputFileError(path, "file is empty (0 bytes)", rule="non_empty_file")
    with path.open("rb") as fh:
        return fh.read(_SNIFF_BYTES)


def _read_table(path: Path, dataset: str) -> pd.DataFrame:
    head = _sniff(path)
    if path.suffix == ".parquet":
        return _read_parquet(path, dataset, head)
    return _read_csv(path, dataset, head)


def _read_header(path: Path, dataset: str) -> pd.DataFrame:
    """The columns of a table file, as an empty frame, with its structure checked."""
    head = _sniff(path)
    if path.suffix == ".parquet":
        import pyarrow as pa
        import pyarrow.parquet as pq

        _check_parquet_magic(path, head)
        try:
            frame = pq.read_schema(path).empty_table().to_pandas()
        except (pa.ArrowException, OSError, ValueError) as exc:
            raise InputFileError(path, f"cannot read parquet: {_first_line(exc)}",
                                 rule="parquet_readable") from None
    else:
        _check_csv_text(path, head)
        with _csv_errors(path):
            frame = pd.read_csv(path, nrows=0, **_csv_options(dataset))
    frame.columns = [str(c).strip() for c in frame.columns]
    if path.suffix != ".parquet":
        _check_delimiter(frame, path)
    _check_required_columns(frame, path, dataset)
    return _ids_as_str(frame, dataset)


def _csv_options(dataset: str) -> dict[str, Any]:
    as_str = {c: str for c in (*ID_COLUMNS[dataset], *TEXT_COLUMNS[dataset])}
    return {
        "dtype": as_str,
        "encoding": "utf-8-sig",
        "keep_default_na": False,  # "NA"/"null" are values; only empty cells are missing
        "na_values": [""],
        "skipinitialspace": True,
    }


def _check_csv_text(path: Path, head: bytes) -> None:
    if head.startswith(_PARQUET_MAGIC) or b"\x00" in head:
        raise InputFileError(path, "file looks binary (NUL bytes), not CSV text",
                             rule="csv_text")
    if not head.strip():
        raise InputFileError(path, "file is empty (whitespace only)", rule="non_empty_file")


@contextmanager
def _csv_errors(path: Path) -> Iterator[None]:
    """Turn pandas' CSV errors into `InputFileError` naming the file and the rule."""
    try:
        yield
    except UnicodeDecodeError as exc:
        raise InputFileError(
            path, f"not valid UTF-8 at byte {exc.start}: {exc.reason}", rule="utf8_encoding"
        ) from None
    except pd.errors.EmptyDataError:
        raise InputFileError(path, "file has no header and no rows", rule="non_empty_file") from None
    except (pd.errors.ParserError, ValueError) as exc:
        raise InputFileError(path, f"cannot parse CSV: {_first_line(exc)}",
                             rule="csv_parseable") from None


def _read_csv(path: Path, dataset: str, head: bytes) -> pd.DataFrame:
    _check_csv_text(path, head)
    with _csv_errors(path):
        frame = pd.read_csv(path, **_csv_options(dataset))
    frame.columns = [str(c).strip() for c in frame.columns]
    _check_delimiter(frame, path)
    return _ids_as_str(frame, dataset)


def _csv_chunks(path: Path, dataset: str, head: bytes, chunk_rows: int,
                columns: Sequence[str] | None) -> Iterator[pd.DataFrame]:
    _check_csv_text(path, head)
    options = _csv_options(dataset)
    if columns is not None:
        wanted = set(columns)
        options["usecols"] = lambda name: str(name).strip() in wanted
    first = True
    with _csv_errors(path), pd.read_csv(path, chunksize=chunk_rows, **options) as reader:
        for chunk in reader:  # pandas numbers the rows of every chunk from the file's start
            chunk.columns = [str(c).strip() for c in chunk.columns]
            if first and columns is None:
                _check_delimiter(chunk, path)
                _check_required_columns(chunk, path, dataset)
            first = False
            yield _ids_as_str(chunk, dataset)


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


def _check_parquet_magic(path: Path, head: bytes) -> None:
    if not head.startswith(_PARQUET_MAGIC):
        raise InputFileError(path, "not a parquet file (missing PAR1 magic bytes)",
                             rule="parquet_readable")


def _read_parquet(path: Path, dataset: str, head: bytes) -> pd.DataFrame:
    import pyarrow as pa
    import pyarrow.parquet as pq

    _check_parquet_magic(path, head)
    try:
        table = pq.read_table(path)
        frame = table.to_pandas()
    except (pa.ArrowException, OSError, ValueError) as exc:
        raise InputFileError(path, f"cannot read parquet: {_first_line(exc)}",
                             rule="parquet_readable") from None
    frame.columns = [str(c).strip() for c in frame.columns]
    return _ids_as_str(frame, dataset)


def _parquet_chunks(path: Path, dataset: str, head: bytes, chunk_rows: int,
                    columns: Sequence[str] | None) -> Iterator[pd.DataFrame]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    _check_parquet_magic(path, head)
    try:
        parquet = pq.ParquetFile(path)
        names = parquet.schema_arrow.names
        selected = None if columns is None else [n for n in names if n.strip() in set(columns)]
        stored_range = _stored_range_index(parquet.schema_arrow)
        batches = parquet.iter_batches(batch_size=chunk_rows, columns=selected,
                                       use_pandas_metadata=True)
        offset = 0
        for record_batch in batches:
            frame = pa.Table.from_batches([record_batch]).to_pandas()
            frame.columns = [str(c).strip() for c in frame.columns]
            if offset == 0 and columns is None:
                _check_required_columns(frame, path, dataset)
            rows = len(frame)
            if isinstance(frame.index, pd.RangeIndex):
                # A batch restores a stored RangeIndex from 0; the whole read numbers rows
                # start + step * position.
                start, step = stored_range or (0, 1)
                frame.index = pd.RangeIndex(start + step * offset,
                                            start + step * (offset + rows), step)
            offset += rows
            yield _ids_as_str(frame, dataset)
    except (pa.ArrowException, OSError, ValueError) as exc:
        raise InputFileError(path, f"cannot read parquet: {_first_line(exc)}",
                             rule="parquet_readable") from None


def _stored_range_index(schema: Any) -> tuple[int, int] | None:
    """(start, step) of the RangeIndex pandas stored in a parquet file's metadata, if any."""
    metadata = schema.pandas_metadata or {}
    index_columns = metadata.get("index_columns") or []
    if len(index_columns) == 1 and isinstance(index_columns[0], dict) \
            and index_columns[0].get("kind") == "range":
        return int(index_columns[0].get("start", 0)), int(index_columns[0].get("step", 1))
    return None


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
    dtype = series.dtype
    if pd.api.types.is_string_dtype(dtype) and not pd.api.types.is_object_dtype(dtype):
        return series
    if pd.api.types.is_bool_dtype(dtype) or pd.api.types.is_integer_dtype(dtype):
        return series.astype("str")
    if pd.api.types.is_float_dtype(dtype):
        return _float_ids_as_str(series)
    if pd.api.types.infer_dtype(series, skipna=True) in ("string", "empty"):
        return series.astype("str")
    # Mixed objects (bytes, numbers and text together): rare, converted value by value.
    return series.map(_id_to_str, na_action="ignore").astype("str")


def _float_ids_as_str(series: pd.Series) -> pd.Series:
    values = series.to_numpy(dtype="float64", na_value=np.nan)
    text = series.astype("str")  # str(float) for non-integral values; NaN stays null
    integral = np.isfinite(values) & (np.floor(values) == values)
    exact = integral & (np.abs(values) < 2.0**63)
    if exact.any():
        integers = pd.Series(values[exact].astype("int64"), dtype="int64")
        text[exact] = integers.astype("str").to_numpy()
    huge = integral & ~exact
    if huge.any():  # beyond int64: Python's int gives the exact digits
        text[huge] = [str(int(v)) for v in values[huge]]
    return text


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
    frame = _ids_as_str(frame.copy(), dataset)
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
    by any extra input columns (`arrow_table`). Chunked tables (`Batch.chunked`) are skipped:
    their writer appends them chunk by chunk.

    Returns:
        ``{"users": path, "items": path, "interactions": path}`` (chunked tables left out).
    """
    import pyarrow.parquet as pq

    batch = normalize_batch(batch)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths: dict[str, Path] = {}
    for dataset in DATASETS:
        if dataset in batch.chunked:
            continue
        table = arrow_table(dataset, batch.frame(dataset))
        path = out_dir / f"{dataset}.parquet"
        tmp = path.with_suffix(".parquet.tmp")
        pq.write_table(table, tmp)
        tmp.replace(path)
        paths[dataset] = path
        logger.info("wrote %s: %d rows to %s", dataset, table.num_rows, path)
    return paths


def fixed_arrow_types(dataset: str) -> dict[str, Any]:
    """The columns every written table of `dataset` starts with, and their arrow types."""
    import pyarrow as pa

    string = pa.string()
    return {
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
    }[dataset]


def arrow_table(dataset: str, frame: pd.DataFrame) -> Any:
    """A normalized frame of `dataset` as an arrow table: its fixed columns
    (`fixed_arrow_types`) first, then any extra input columns as pyarrow converts them."""
    import pyarrow as pa

    fixed = fixed_arrow_types(dataset)
    arrays, fields = [], []
    for column, type_ in fixed.items():
        values = frame[column]
        if pa.types.is_string(type_):
            # str() of every non-null value (normalized frames hold plain strings already).
            text = values if _is_plain_str(values) else values.astype("str")
            array = pa.array(text, from_pandas=True)
            array = array.cast(type_) if array.type != type_ else array
        else:
            array = pa.array(values, type=type_, from_pandas=True)
        arrays.append(array)
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


def _is_plain_str(series: pd.Series) -> bool:
    return (pd.api.types.is_string_dtype(series.dtype)
            and not pd.api.types.is_object_dtype(series.dtype))
