"""Read one incoming batch directory: its three tables, typed only as far as structure needs.

A batch is a directory holding three tables, each as CSV *or* parquet (never both):

- ``users``: ``user_id`` plus any attribute columns;
- ``items``: ``item_id``, ``title``, optional ``genres`` (``|``-separated in CSV, a list in parquet);
- ``interactions``: ``user_id``, ``item_id``, ``timestamp`` (unix seconds or ISO-8601), optional
  ``rating``/``weight`` (numbers) and ``event_type``.

`read_batch` only enforces structure (files present, readable, required columns); the data
contract (nulls, uniqueness, ranges, references) is checked by `ingest.validate.validate_batch`
before `ingest.normalize.normalize_batch` converts types. Every structural problem raises
`recsys.errors.InputFileError` naming the file, the column and the rule, including the rules of
`ingest.input_checks` (line and value length, id types, nested values). Ids always come back as
strings (``"007"`` stays ``"007"``), with whitespace around them trimmed (``" u1 "`` is ``u1``:
the one normalisation of ids, applied before validation, so a stray space never makes another
user).

``read_batch(..., chunk_rows=N)`` leaves an interactions file of more than N rows on disk:
`TableChunks` reads it N rows at a time (parquet row batches, pandas CSV chunks) with the same
typing and errors. Conversions are vectorised (pandas/pyarrow); value-by-value Python is left
only for columns of mixed Python objects.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from ingest.id_columns import ID_COLUMNS, ids_as_str
from ingest.input_checks import (
    check_arrow_types,
    check_integral_ids,
    check_value_lengths,
    scan_csv_lines,
)
from ingest.sanitize import short_text
from recsys.errors import InputFileError

logger = logging.getLogger(__name__)

DATASETS: tuple[str, ...] = ("users", "items", "interactions")
REQUIRED_COLUMNS: dict[str, tuple[str, ...]] = {
    "users": ("user_id",),
    "items": ("item_id", "title"),
    "interactions": ("user_id", "item_id", "timestamp"),
}
# Text columns read as strings in CSV whatever they look like.
TEXT_COLUMNS: dict[str, tuple[str, ...]] = {
    "users": (),
    "items": ("title", "genres"),
    "interactions": ("event_type",),
}

# The file formats of a table: ``<dataset>.csv`` or ``<dataset>.parquet``, nothing else.
TABLE_FORMATS: tuple[str, ...] = ("csv", "parquet")

# Longest CSV line / parquet text value accepted by default (`Settings.max_line_bytes`).
MAX_LINE_BYTES = 1024 * 1024

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


def read_batch(input_dir: Path, *, chunk_rows: int | None = None,
               max_line_bytes: int | None = MAX_LINE_BYTES) -> Batch:
    """Read ``users``, ``items`` and ``interactions`` from `input_dir`.

    Id columns come back as strings, trimmed (``"007"`` stays ``"007"``, ``"007 "`` becomes
    ``"007"``); other columns as parsed.

    Args:
        input_dir: the batch directory.
        chunk_rows: when given, an ``interactions`` file of more rows than this is not read
            whole: its structure (header, required columns) is checked, ``Batch.interactions``
            holds its columns only and ``Batch.chunked["interactions"]`` reads it in chunks of
            `chunk_rows` rows. Users and items are always read whole.
        max_line_bytes: the longest CSV line, and the longest parquet text value, accepted
            (None: no limit). CSV lines are checked in one streaming pass before parsing.

    Raises:
        InputFileError: the directory or a file is missing, a table exists as both CSV and
            parquet, a file is empty, binary, badly encoded or unparseable, a required column
            is missing, a line or value is too long, an id column is not text or integers, or
            a column holds nested values it may not hold. (Errors further down a chunked file
            surface while its chunks are read.)
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
        rows = _checked_rows(path, max_line_bytes)
        if chunk_rows is not None and dataset in CHUNKABLE_DATASETS and rows > chunk_rows:
            frame = _read_header(path, dataset)
            chunked[dataset] = TableChunks(path=path, dataset=dataset, chunk_rows=chunk_rows,
                                           max_value_bytes=max_line_bytes, rows=rows)
            logger.info("%s: %s is read in chunks of %d rows (%d columns)", dataset, path,
                        chunk_rows, frame.shape[1])
        else:
            frame = _read_table(path, dataset, max_line_bytes)
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
    the type its chunk gave it. `rows` is the row count `read_batch` found (an upper bound
    for CSV; None when not counted), for progress reports.
    """

    path: Path
    dataset: str
    chunk_rows: int
    max_value_bytes: int | None = MAX_LINE_BYTES
    rows: int | None = None

    def __iter__(self) -> Iterator[pd.DataFrame]:
        return self.iter_columns(None)

    def iter_columns(self, columns: Sequence[str] | None) -> Iterator[pd.DataFrame]:
        """Chunks holding only `columns` (names as `read_batch` reports them; all when None).

        Raises:
            InputFileError: the file cannot be read or parsed (raised when reached).
        """
        head = _sniff(self.path)
        if self.path.suffix == ".parquet":
            return _parquet_chunks(self.path, self.dataset, head, self.chunk_rows, columns,
                                   self.max_value_bytes)
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


def _checked_rows(path: Path, max_line_bytes: int | None) -> int:
    """`count_rows` of a table file; for CSV from the streaming pass that also checks the
    line length (`ingest.input_checks.scan_csv_lines`), so the file is scanned once."""
    if path.suffix == ".parquet" or not path.is_file():
        return count_rows(path)
    try:
        return scan_csv_lines(path, max_line_bytes)
    except OSError as exc:
        raise InputFileError(path, f"cannot read: {_first_line(exc)}",
                             rule="file_exists") from None


def batch_files(input_dir: Path) -> list[Path]:
    """The table files of a batch folder that the reader recognises: ``users``, ``items`` and
    ``interactions`` as ``.csv`` or ``.parquet``, at its top level, sorted. Other files are
    not part of the batch."""
    input_dir = Path(input_dir)
    return sorted(path for dataset in DATASETS for suffix in TABLE_FORMATS
                  if (path := input_dir / f"{dataset}.{suffix}").is_file())


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


def _read_table(path: Path, dataset: str, max_value_bytes: int | None) -> pd.DataFrame:
    head = _sniff(path)
    if path.suffix == ".parquet":
        return _read_parquet(path, dataset, head, max_value_bytes)
    return _read_csv(path, dataset, head)


def _read_header(path: Path, dataset: str) -> pd.DataFrame:
    """The columns of a table file, as an empty frame, with its structure checked."""
    head = _sniff(path)
    if path.suffix == ".parquet":
        import pyarrow as pa
        import pyarrow.parquet as pq

        _check_parquet_magic(path, head)
        try:
            schema = pq.read_schema(path)
        except (pa.ArrowException, OSError, ValueError) as exc:
            raise InputFileError(path, f"cannot read parquet: {_first_line(exc)}",
                                 rule="parquet_readable") from None
        check_arrow_types(schema, path, dataset=dataset, id_columns=ID_COLUMNS[dataset])
        frame = schema.empty_table().to_pandas()
    else:
        _check_csv_text(path, head)
        with _csv_errors(path):
            frame = pd.read_csv(path, nrows=0, **_csv_options(dataset))
    frame.columns = [str(c).strip() for c in frame.columns]
    if path.suffix != ".parquet":
        _check_delimiter(frame, path)
    _check_required_columns(frame, path, dataset)
    return ids_as_str(frame, dataset)


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
    return ids_as_str(frame, dataset)


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
            yield ids_as_str(chunk, dataset)


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


def _read_parquet(path: Path, dataset: str, head: bytes,
                  max_value_bytes: int | None) -> pd.DataFrame:
    import pyarrow as pa
    import pyarrow.parquet as pq

    _check_parquet_magic(path, head)
    try:
        check_arrow_types(pq.read_schema(path), path, dataset=dataset,
                          id_columns=ID_COLUMNS[dataset])
        table = pq.read_table(path)
        check_value_lengths(table, path, max_value_bytes)
        frame = table.to_pandas()
    except (pa.ArrowException, OSError, ValueError) as exc:
        raise InputFileError(path, f"cannot read parquet: {_first_line(exc)}",
                             rule="parquet_readable") from None
    frame.columns = [str(c).strip() for c in frame.columns]
    check_integral_ids(frame, path, ID_COLUMNS[dataset])
    return ids_as_str(frame, dataset)


def _parquet_chunks(path: Path, dataset: str, head: bytes, chunk_rows: int,
                    columns: Sequence[str] | None,
                    max_value_bytes: int | None) -> Iterator[pd.DataFrame]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    _check_parquet_magic(path, head)
    try:
        parquet = pq.ParquetFile(path)
        check_arrow_types(parquet.schema_arrow, path, dataset=dataset,
                          id_columns=ID_COLUMNS[dataset])
        names = parquet.schema_arrow.names
        selected = None if columns is None else [n for n in names if n.strip() in set(columns)]
        stored_range = _stored_range_index(parquet.schema_arrow)
        batches = parquet.iter_batches(batch_size=chunk_rows, columns=selected,
                                       use_pandas_metadata=True)
        offset = 0
        for record_batch in batches:
            check_value_lengths(record_batch, path, max_value_bytes)
            frame = pa.Table.from_batches([record_batch]).to_pandas()
            frame.columns = [str(c).strip() for c in frame.columns]
            check_integral_ids(frame, path, ID_COLUMNS[dataset])
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
            yield ids_as_str(frame, dataset)
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


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return short_text(text.splitlines()[0]) if text else type(exc).__name__
