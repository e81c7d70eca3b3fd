"""GE's SQL engine on DuckDB (``RECSYS_VALIDATION_ENGINE=duckdb``): the workaround it needs, and
the same reports as the pandas engine."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from ingest import sql_validation
from ingest.ge_context import import_gx, load_suite, new_context
from ingest.reader import read_batch
from ingest.sql_validation import run_sql_checkpoint
from ingest.validate import validate_batch
from recsys.settings import Settings

from .conftest import write_batch

CORPUS = Path(__file__).resolve().parent / "broken_batches"
NOW = pd.Timestamp("2025-01-01", tz="UTC")
_FORMAT = {"result_format": "COMPLETE", "partial_unexpected_count": 10,
           "include_unexpected_rows": False}


def _users_frame() -> pd.DataFrame:
    return pd.DataFrame({
        "user_id": ["a", "b", None, "  ", "b"],
        "age": ["30", "200", "x", None, "40"],
        "gender": None, "occupation": None, "zip": None,
        "_age_value": [30.0, 200.0, None, None, 40.0],
        "_age_unparseable": [None, None, "x", None, None],
    }, index=pd.RangeIndex(5))


def _run_users_suite(expectations_dir: Path) -> Any:
    gx = import_gx()
    context, _ = new_context(gx, None)
    suite = load_suite(gx, context, expectations_dir / "users.json")
    parameters = {"users_min_rows": 1, "users_max_rows": 100, "users_exact_columns": True,
                  "age_min": 0, "age_max": 120}
    return run_sql_checkpoint(gx, context, "users", suite, _users_frame(), parameters, _FORMAT)


def _by_type(result: Any) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for r in result.results:
        key = r.expectation_config.type
        if "column" in r.expectation_config.kwargs:
            key += ":" + r.expectation_config.kwargs["column"]
        out[key] = r
    return out


def test_duckdb_results_need_the_persistent_connection(expectations_dir: Path,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    """GE #10738/#11579: without one persistent connection GE closes it before fetching the
    bundled metrics row, DuckDB returns no rows and every metric errors (IndexError)."""
    import_gx()
    sql_validation.install_duckdb_support()
    from great_expectations.execution_engine.sqlalchemy_execution_engine import (
        SqlAlchemyExecutionEngine,
    )

    monkeypatch.setattr(SqlAlchemyExecutionEngine, "get_connection",
                        SqlAlchemyExecutionEngine.get_connection.__wrapped__)
    monkeypatch.setattr(sql_validation, "_keep_duckdb_connection", lambda engine_class: None)
    result = _run_users_suite(expectations_dir)

    # Only the schema checks (column names come from reflection, not a bundle) survive.
    bundled = [r for r in result.results if r.expectation_config.type not in
               ("expect_column_to_exist", "expect_table_columns_to_match_set")]
    assert len(bundled) == 6
    for r in bundled:
        assert not r.success and not r.result
        assert "IndexError" in json.dumps(r.exception_info, default=str)


def test_duckdb_results_with_the_workaround(expectations_dir: Path) -> None:
    by_type = _by_type(_run_users_suite(expectations_dir))

    assert by_type["expect_table_row_count_to_be_between"].result["observed_value"] == 5
    assert by_type["expect_table_columns_to_match_set"].success
    # the row column is GE's index column only; the reported kwargs are the suite's
    assert "_row" not in by_type["expect_table_columns_to_match_set"].expectation_config.kwargs[
        "column_set"]
    null = by_type["expect_column_values_to_not_be_null:user_id"].result
    assert (null["unexpected_count"], null["unexpected_index_list"]) == (1, [2])
    unique = by_type["expect_column_values_to_be_unique:user_id"].result
    assert unique["unexpected_index_list"] == [1, 4]
    assert unique["partial_unexpected_list"] == ["b", "b"]
    blank = by_type["expect_column_values_to_not_match_regex:user_id"]  # regex on DuckDB
    assert not blank.exception_info.get("raised_exception")
    assert blank.result["unexpected_index_list"] == [3]
    age = by_type["expect_column_values_to_be_between:_age_value"].result
    assert (age["unexpected_index_list"], age["partial_unexpected_list"]) == ([1], [200.0])
    assert by_type["expect_column_values_to_be_null:_age_unparseable"].result[
        "unexpected_index_list"] == [2]
    assert not any("unexpected_index_query" in (r.result or {}) for r in by_type.values())


def _report(batch_dir: Path, engine: str, policy: str, tmp_path: Path) -> dict[str, Any]:
    contracts = ({dataset: {"policy": "drop", "max_invalid_fraction": 0.9}
                  for dataset in ("users", "items", "interactions")} if policy == "drop" else {})
    settings = Settings(data_dir=tmp_path / "data", validation_engine=engine,
                        contracts=contracts)
    report = validate_batch(read_batch(batch_dir), expectations_dir=settings.expectations_dir,
                            settings=settings, now=NOW)
    data = json.loads(json.dumps(report.to_dict(), default=str))
    for suite in data["suites"]:
        suite.pop("seconds")
    data["invalid_index"] = {k: list(map(int, v)) for k, v in report.invalid_index.items()}
    return data


# Two of the corpus by default (a table-level and a row-level rule, under each policy); the
# whole matrix with the slow tests.
_DEFAULT_CASES = {("duplicate_interactions", "drop"), ("unknown_user", "fail")}


@pytest.mark.parametrize(("fault", "policy"), [
    pytest.param(fault, policy,
                 marks=() if (fault, policy) in _DEFAULT_CASES else pytest.mark.slow)
    for fault in ("duplicate_interactions", "unexpected_column", "rating_not_numeric",
                  "unknown_user", "duplicate_user_id")
    for policy in ("fail", "drop")])
def test_engines_give_the_same_report(fault: str, policy: str, tmp_path: Path) -> None:
    pandas = _report(CORPUS / fault, "pandas", policy, tmp_path)
    duckdb = _report(CORPUS / fault, "duckdb", policy, tmp_path)

    assert duckdb == pandas
    assert not duckdb["success"] or policy == "drop"


@pytest.mark.parametrize("policy", ["fail", "drop"])
def test_engines_count_partly_null_duplicate_keys_alike(policy: str, tmp_path: Path) -> None:
    """GE's SQL engine skips keys with a null part; the pandas engine counts them. Both must
    report the pandas counts, samples and rows."""
    rows = [f"00{7 + i % 3},{1 + i % 3},{881250949 + i},{1 + i % 5}" for i in range(30)]
    rows[8] = rows[12]
    rows[25] = ",,,"  # an all-null key: ignored
    rows[26] = rows[27] = "007,,881250999,1"  # a partly null key counts
    root = write_batch(tmp_path / "b", interactions="user_id,item_id,timestamp,rating\n"
                       + "\n".join(rows) + "\n")

    pandas = _report(root, "pandas", policy, tmp_path)
    duckdb = _report(root, "duckdb", policy, tmp_path)

    assert duckdb == pandas
    (duplicates,) = [f for f in pandas["failures"] if f["rule"] == "duplicate_interactions_bounded"]
    assert duplicates["observed"].startswith("4 of 30 rows")


def test_duckdb_engine_builds_data_docs(batch_dir: Path, tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path / "data", validation_engine="duckdb")
    report = validate_batch(read_batch(batch_dir), expectations_dir=settings.expectations_dir,
                            settings=settings, docs_dir=tmp_path / "docs", now=NOW)

    assert report.success, report.failures
    assert report.data_docs and Path(report.data_docs).is_file()
