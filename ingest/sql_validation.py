"""Great Expectations on its SQL execution engine over DuckDB (``RECSYS_VALIDATION_ENGINE=duckdb``).

GE stays the engine of record: the same suites, checkpoints, result format and stored results
(Data Docs), read by the same `ingest.ge_results.collect_results`. Only where the metrics are
computed changes: the prepared frame (input columns plus `ingest.helper_columns`) is loaded
into a private, named in-memory DuckDB database with its row number as column ``_row``
(`ROW_COLUMN`), and GE's `SqlAlchemyExecutionEngine` (through ``duckdb-engine``) bundles each
domain's metrics into one SELECT there instead of computing them one by one in pandas.

GE 1.x does not support the ``duckdb`` dialect as is; `install_duckdb_support` patches two
things, both pinned by ``tests/ingest/test_sql_validation.py``:

- the connection (GE #10738, #11579): `SqlAlchemyExecutionEngine.get_connection` closes the
  connection before `resolve_metric_bundle` fetches the bundled row; DuckDB then returns no
  rows and GE fails with an ``IndexError`` (seen as every expectation erroring or empty). GE
  keeps one persistent connection for sqlite and a few others; the patch does the same for
  ``duckdb``.
- regular expressions: GE has no regex expression for the dialect ("Regex is not supported
  for dialect duckdb"); the patch maps them to DuckDB's ``regexp_matches`` (a search, as
  pandas' ``str.contains`` and PostgreSQL's ``~`` are).

Row numbers come back from GE as ``{"_row": n, <column>: value}`` dicts; `_row_labels` turns
them into the plain row labels a pandas run reports, so nothing downstream changes.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pandas as pd
import pyarrow as pa

from ingest.ge_results import SCHEMA_EXPECTATION

logger = logging.getLogger(__name__)

ROW_COLUMN = "_row"
_DIALECT = "duckdb"
_INDEX_KEYS = ("unexpected_index_list", "partial_unexpected_index_list")
# Keys only the SQL engine adds; a pandas run has neither (the query would land in Data Docs).
_SQL_ONLY_KEYS = ("unexpected_index_query", "unexpected_index_column_names")
_REGEX_MODULES = (
    "column_values_match_regex",
    "column_values_not_match_regex",
    "column_values_match_regex_list",
    "column_values_not_match_regex_list",
)


def install_duckdb_support() -> None:
    """Patch GE (already imported) to run on DuckDB: one persistent connection per execution
    engine for the ``duckdb`` dialect, and regex expressions for it. Idempotent."""
    import importlib

    from great_expectations.execution_engine.sqlalchemy_execution_engine import (
        SqlAlchemyExecutionEngine,
    )

    _keep_duckdb_connection(SqlAlchemyExecutionEngine)
    for name in _REGEX_MODULES:
        module = importlib.import_module(
            f"great_expectations.expectations.metrics.column_map_metrics.{name}")
        if not getattr(module.get_dialect_regex_expression, "_recsys_duckdb", False):
            module.get_dialect_regex_expression = _regex_expression(  # type: ignore[attr-defined]
                module.get_dialect_regex_expression)


def _keep_duckdb_connection(engine_class: Any) -> None:
    """Give `engine_class` (GE's SqlAlchemyExecutionEngine) one persistent connection for the
    ``duckdb`` dialect; idempotent. The unpatched method stays at ``__wrapped__``."""
    if getattr(engine_class.get_connection, "_recsys_duckdb", False):
        return
    original = engine_class.get_connection

    @contextmanager
    def get_connection(self: Any) -> Any:
        if self.engine.dialect.name != _DIALECT:
            with original(self) as connection:
                yield connection
            return
        # As GE does for sqlite: the connection outlives the query, so the bundled row can
        # still be fetched after GE leaves this block (#10738/#11579).
        if not self._connection:
            self._connection = self.engine.connect()
        yield self._connection

    get_connection._recsys_duckdb = True  # type: ignore[attr-defined]
    get_connection.__wrapped__ = original  # type: ignore[attr-defined]
    engine_class.get_connection = get_connection


def _regex_expression(original: Any) -> Any:
    def get_dialect_regex_expression(column: Any, regex: str, dialect: Any,
                                     positive: bool = True) -> Any:
        name = getattr(getattr(dialect, "dialect", dialect), "name", None)
        if name != _DIALECT:
            return original(column, regex, dialect, positive=positive)
        import sqlalchemy as sa

        expression = sa.func.regexp_matches(column, sa.literal(regex))
        return expression if positive else sa.not_(expression)

    get_dialect_regex_expression._recsys_duckdb = True  # type: ignore[attr-defined]
    return get_dialect_regex_expression


def run_sql_checkpoint(gx: Any, context: Any, dataset: str, suite: Any, frame: pd.DataFrame,
                       parameters: dict[str, Any], result_format: dict[str, Any]) -> Any:
    """Run `suite` on `frame` through a GE checkpoint on DuckDB; its one suite result.

    The result is shaped as a pandas run's: offending rows are named by `frame`'s index
    labels. The DuckDB database lives only for this call.

    Args:
        gx: the `great_expectations` module (`ingest.ge_context.import_gx`).
        context: the run's GE context (its result store feeds Data Docs).
        dataset: the table name (names the datasource, asset and checkpoint).
        suite: the context's suite for `dataset`.
        frame: the prepared frame (`ingest.helper_columns.prepare_frame`).
        parameters: the suite's ``$PARAMETER`` values.
        result_format: GE's result format (as for the pandas engine).
    """
    install_duckdb_support()
    name = f"sql_{dataset}_{uuid.uuid4().hex[:12]}"
    datasource = context.data_sources.add_sql(
        name, connection_string=f"{_DIALECT}:///:memory:{name}")
    # A named in-memory database lives while a connection to it is open: this one loads the
    # table and keeps it alive until GE's own (persistent) connection is done.
    holder = datasource.get_engine().connect()
    try:
        loader = holder.connection.driver_connection
        loader.register("frame_view", _arrow_table(frame))
        loader.execute(f"CREATE TABLE {_quote(dataset)} AS SELECT * FROM frame_view")
        loader.unregister("frame_view")
        asset = datasource.add_table_asset(dataset, table_name=dataset)
        batch_definition = asset.add_batch_definition_whole_table("whole_table")
        with _row_column_allowed(suite):
            definition = context.validation_definitions.add(
                gx.ValidationDefinition(name=f"ingest_{dataset}", data=batch_definition,
                                        suite=suite))
            checkpoint = context.checkpoints.add(gx.Checkpoint(
                name=f"ingest_{dataset}", validation_definitions=[definition],
                result_format={**result_format,
                               "unexpected_index_column_names": [ROW_COLUMN]}))
            outcome = checkpoint.run(expectation_parameters=parameters)
        ((key, result),) = outcome.run_results.items()
        _row_labels(result)
        _compound_rows(result, loader, dataset, complete=result_format["result_format"]
                       == "COMPLETE", sample=int(result_format.get("partial_unexpected_count",
                                                                   20)))
        # the checkpoint stored GE's own result; Data Docs must show the corrected one
        context.validation_results_store.set(key, result)
    finally:
        datasource.get_execution_engine().close()
        holder.close()
        datasource.get_engine().dispose()
    return result


@contextmanager
def _row_column_allowed(suite: Any) -> Iterator[None]:
    """While open, the schema expectation (which lists the helper columns already) accepts the
    row-number column, part of the table GE sees; the suite is restored on exit."""
    changed = []
    for expectation in suite.expectations:
        columns = list(getattr(expectation, "column_set", None) or [])
        if (expectation.expectation_type == SCHEMA_EXPECTATION
                and ROW_COLUMN not in columns):
            expectation.column_set = [*columns, ROW_COLUMN]
            changed.append((expectation, columns))
    if changed:
        suite.save()  # GE refuses to run a suite changed since it was saved
    try:
        yield
    finally:
        for expectation, columns in changed:
            expectation.column_set = columns
        if changed:
            suite.save()


def _arrow_table(frame: pd.DataFrame) -> pa.Table:
    """`frame` as an Arrow table plus `ROW_COLUMN` (its index). A column Arrow cannot type
    (mixed Python objects) goes as text, nulls kept."""
    arrays = [pa.array(frame.index.to_numpy(), type=pa.int64())]
    names = [ROW_COLUMN]
    for column in frame.columns:
        values = frame[column]
        try:
            array = pa.array(values, from_pandas=True)
        except (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError):
            array = pa.array(values.astype("object").where(values.isna(), values.astype(str)),
                             type=pa.string(), from_pandas=True)
        if pa.types.is_null(array.type):
            array = array.cast(pa.string())  # all null: a typed column DuckDB can compare
        arrays.append(array)
        names.append(str(column))
    return pa.Table.from_arrays(arrays, names=names)


def _compound_rows(result: Any, connection: Any, table: str, *, complete: bool,
                   sample: int) -> None:
    """Count and name the offending rows of compound-key uniqueness as GE's pandas engine does.

    GE's SQL engine names no rows for it and skips keys with a null part; pandas counts every
    row whose key repeats, a partly null key included (only all-null keys are ignored, GE's
    default ``ignore_row_if``). Counts, samples, row numbers and success are recomputed here
    with one window query, so both engines report the same.
    """
    for r in result.results:
        res = r.result
        config = r.expectation_config
        if config.type != "expect_compound_columns_to_be_unique" or res is None or (
                "element_count" not in res):
            continue
        columns = [str(c) for c in config.kwargs["column_list"]]
        keys = ", ".join(_quote(c) for c in columns)
        not_all_null = " OR ".join(f"{_quote(c)} IS NOT NULL" for c in columns)
        repeated = (f"FROM {_quote(table)} WHERE {not_all_null} "
                    f"QUALIFY count(*) OVER (PARTITION BY {keys}) > 1")
        if not res.get("unexpected_count"):
            some_null = " OR ".join(f"{_quote(c)} IS NULL" for c in columns)
            (partly_null,) = connection.execute(
                f"SELECT count(*) FROM {_quote(table)} WHERE ({not_all_null}) AND ({some_null})"
            ).fetchone()
            if not partly_null:
                continue  # GE's count is the pandas count: no key has a null part
        (count,) = connection.execute(f"SELECT count(*) FROM (SELECT 1 {repeated})").fetchone()
        limit = "" if complete else f" LIMIT {int(sample)}"
        rows = connection.execute(
            f"SELECT {ROW_COLUMN}, {keys} {repeated} ORDER BY {ROW_COLUMN}{limit}").fetchall()
        labels = [int(row[0]) for row in rows]
        values = [dict(zip(columns, row[1:], strict=True)) for row in rows]
        considered = int(res["element_count"]) - int(res.get("missing_count") or 0)
        res.update({
            "unexpected_count": int(count),
            "unexpected_percent": 100.0 * count / considered if considered else 0.0,
            "partial_unexpected_list": values[:sample],
            "partial_unexpected_index_list": labels[:sample],
        })
        if "unexpected_percent_total" in res:
            res["unexpected_percent_total"] = (100.0 * count / res["element_count"]
                                               if res["element_count"] else 0.0)
        if "unexpected_percent_nonmissing" in res:
            res["unexpected_percent_nonmissing"] = res["unexpected_percent"]
        if complete:
            res["unexpected_list"] = values
            res["unexpected_index_list"] = labels
        mostly = float(config.kwargs.get("mostly") or 1.0)
        # GE's rule (`_mostly_success`): the share of considered rows that pass >= mostly.
        r.success = not considered or (considered - count) / considered >= mostly
    result.success = all(r.success for r in result.results)


def _quote(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _row_labels(result: Any) -> None:
    """Turn GE's ``{"_row": n, ...}`` offending-row dicts into row labels and drop the row
    column from the schema expectation's kwargs, in place: the shape of a pandas run."""
    for r in result.results:
        res = r.result
        if not res:
            continue
        for key in _INDEX_KEYS:
            rows = res.get(key)
            if rows and isinstance(rows[0], dict):
                res[key] = [row[ROW_COLUMN] for row in rows]
        for key in _SQL_ONLY_KEYS:
            res.pop(key, None)
    for r in result.results:
        kwargs = r.expectation_config.kwargs
        if ROW_COLUMN in (kwargs.get("column_set") or []):
            kwargs["column_set"] = [c for c in kwargs["column_set"] if c != ROW_COLUMN]
