"""Structural rules a batch file must meet before its values are trusted as data.

The reader (`ingest.reader`) applies them while it reads, each raising
`recsys.errors.InputFileError` naming the file, the column and the rule:

- ``max_line_length``: no CSV line is longer than the limit (`scan_csv_lines`, one streaming
  pass before pandas parses anything, so a 200 MB field costs a scan, not gigabytes);
- ``max_value_length``: no parquet text value is longer than the limit (`check_value_lengths`);
- ``id_type``: id columns hold text or integers (integral floats count as integers);
- ``nested_value``: no lists, structs or maps, except in the list columns of the contract
  (`LIST_COLUMNS`: ``items.genres``, a list of text).
"""

from __future__ import annotations

from collections.abc import Collection
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from recsys.errors import InputFileError

# Columns the contract declares as lists (of text); nested values anywhere else are refused.
LIST_COLUMNS: dict[str, tuple[str, ...]] = {"users": (), "items": ("genres",),
                                            "interactions": ()}
_SCAN_BLOCK_BYTES = 16 * 1024 * 1024


def scan_csv_lines(path: Path, limit: int | None) -> int:
    """Rows of a CSV file (the lines after the header; an upper bound, as quoted line breaks
    count), checking in the same streaming pass that no line is longer than `limit` bytes.

    Reads the file in 16 MiB blocks whatever its lines, and stops at the first line over the
    limit.

    Raises:
        InputFileError: rule ``max_line_length``, naming the line and the limit.
    """
    lines, last = 0, b"\n"
    current = 0  # bytes of the line still open at the end of the previous block
    with Path(path).open("rb") as fh:
        while block := fh.read(_SCAN_BLOCK_BYTES):
            last = block[-1:]
            first = block.find(b"\n")
            if first < 0:
                current += len(block)
                _check_length(path, current, limit, lines + 1)
                continue
            _check_length(path, current + first, limit, lines + 1)
            final = block.rfind(b"\n")
            if limit is not None and final - first - 1 > limit:
                _check_inner_lines(path, block, first, final, limit, lines)
            lines += block.count(b"\n")
            current = len(block) - final - 1
    return max(0, lines + (last != b"\n") - 1)


def _check_inner_lines(path: Path, block: bytes, first: int, final: int, limit: int,
                       lines_before: int) -> None:
    """Find a line over `limit` between the first and the last line break of `block`.

    A line longer than `limit` covers a whole window of ``limit // 2`` bytes at one of the
    fixed steps below, and such a window holds no line break; only those are measured, so the
    search costs a few ``find`` calls per block."""
    half = max(limit // 2, 1)
    for start in range(first + 1, final, half):
        if block.find(b"\n", start, min(start + half, final)) >= 0:
            continue
        begin = block.rfind(b"\n", 0, start) + 1
        end = block.find(b"\n", start)
        _check_length(path, end - begin, limit, lines_before + block.count(b"\n", 0, begin) + 1)


def _check_length(path: Path, length: int, limit: int | None, line: int) -> None:
    if limit is not None and length > limit:
        raise InputFileError(
            path, f"line {line} is longer than the limit of {limit:,} bytes "
            "(RECSYS_MAX_LINE_BYTES); a line holds one row, so this is not a table of events",
            rule="max_line_length")


def check_value_lengths(data: Any, path: Path, limit: int | None) -> None:
    """No text or binary value in `data` (an arrow table or record batch; lists of text
    included) is longer than `limit` bytes. Vectorised: one length kernel per column.

    Raises:
        InputFileError: rule ``max_value_length``, naming the column and the limit.
    """
    if limit is None:
        return
    for name, column in zip(data.schema.names, data.columns, strict=True):
        chunks = column.chunks if isinstance(column, pa.ChunkedArray) else [column]
        for chunk in chunks:
            values = _flat_values(chunk)
            if values is None or len(values) == 0:
                continue
            longest = pc.max(pc.binary_length(values)).as_py()
            if longest is not None and longest > limit:
                raise InputFileError(
                    path, f"a value of {longest:,} bytes is longer than the limit of "
                    f"{limit:,} bytes (RECSYS_MAX_LINE_BYTES)", column=name.strip(),
                    rule="max_value_length")


def _flat_values(array: Any) -> Any:
    """The text/binary values of an array (list entries flattened), or None for other types."""
    kind = array.type
    if pa.types.is_dictionary(kind):
        return _flat_values(array.dictionary)
    if _is_list(kind):
        return _flat_values(pc.list_flatten(array))
    if pa.types.is_string_view(kind) or pa.types.is_binary_view(kind):
        return array.cast(pa.large_binary())  # the length kernel has no view variant
    if _is_text(kind):
        return array
    return None


def check_arrow_types(schema: Any, path: Path, *, dataset: str,
                      id_columns: Collection[str]) -> None:
    """Id columns are text or numbers; nested types only in `LIST_COLUMNS` (a list of
    scalars). Checked on the parquet schema, before any value is converted.

    Raises:
        InputFileError: rule ``id_type`` or ``nested_value``, naming the column.
    """
    for field in schema:
        name = str(field.name).strip()
        kind = field.type.value_type if pa.types.is_dictionary(field.type) else field.type
        if name in id_columns:
            if not (_is_text(kind) or pa.types.is_integer(kind) or pa.types.is_floating(kind)
                    or pa.types.is_null(kind)):
                raise InputFileError(
                    path, f"an id must be text or an integer; this column is {field.type}",
                    column=name, rule="id_type")
        elif _is_nested(kind) and not (name in LIST_COLUMNS[dataset] and _is_list(kind)
                                       and not _is_nested(kind.value_type)):
            allowed = (f"; {name} may be a list of text" if name in LIST_COLUMNS[dataset]
                       else "; only " + ", ".join(LIST_COLUMNS["items"]) + " may be a list")
            raise InputFileError(
                path, f"nested values ({field.type}) are not data of this column{allowed}",
                column=name, rule="nested_value")


def check_integral_ids(frame: pd.DataFrame, path: Path, columns: Collection[str]) -> None:
    """Float id columns (parquet written from pandas with nulls) hold whole numbers only.

    Raises:
        InputFileError: rule ``id_type``, naming the column and a bad value.
    """
    for column in columns:
        if column not in frame.columns or not pd.api.types.is_float_dtype(frame[column].dtype):
            continue
        values = frame[column].to_numpy(dtype="float64", na_value=np.nan)
        present = ~np.isnan(values)
        bad = present & ~(np.isfinite(values) & (np.floor(values) == values))
        if bad.any():
            raise InputFileError(
                path, f"an id must be text or an integer, found {values[bad][0]!r}",
                column=column, rule="id_type")


def _is_text(kind: Any) -> bool:
    return (pa.types.is_string(kind) or pa.types.is_large_string(kind)
            or pa.types.is_string_view(kind) or pa.types.is_binary(kind)
            or pa.types.is_large_binary(kind) or pa.types.is_binary_view(kind))


def _is_list(kind: Any) -> bool:
    return (pa.types.is_list(kind) or pa.types.is_large_list(kind)
            or pa.types.is_fixed_size_list(kind) or pa.types.is_list_view(kind)
            or pa.types.is_large_list_view(kind))


def _is_nested(kind: Any) -> bool:
    return pa.types.is_nested(kind) or pa.types.is_union(kind)
