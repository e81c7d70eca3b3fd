from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pandas as pd

from ingest.reader import read_batch
from ingest.report import ValidationReport
from ingest.validate import validate_batch
from recsys.settings import Settings

from .conftest import INTERACTIONS_CSV, write_batch


def _validate(root: Path, expectations_dir: Path, **kwargs: object) -> ValidationReport:
    kwargs.setdefault("settings", Settings(data_dir=root.parent / "data"))
    return validate_batch(read_batch(root), expectations_dir=expectations_dir, **kwargs)


def _only_failure(report: ValidationReport) -> dict:
    assert not report.success
    assert len(report.failures) == 1, report.failures
    return report.failures[0]


def test_valid_batch_passes(batch_dir: Path, expectations_dir: Path) -> None:
    report = _validate(batch_dir, expectations_dir)

    assert report.success, report.failures
    assert report.failures == []
    assert [s["suite"] for s in report.suites] == ["users", "items", "interactions"]
    assert all(s["evaluated"] == s["successful"] > 0 for s in report.suites)
    json.dumps(report.to_dict())
    assert "PASSED" in report.to_markdown()


def test_duplicate_user_id(tmp_path: Path, expectations_dir: Path) -> None:
    root = write_batch(tmp_path / "b", users="user_id,age\n007,1\n008,2\n009,3\n007,4\n")
    f = _only_failure(_validate(root, expectations_dir))
    assert (f["dataset"], f["column"], f["rule"]) == ("users", "user_id", "id_unique")
    assert f["expectation"] == "expect_column_values_to_be_unique"
    assert f["file"].endswith("users.csv")
    assert f["sample"] == ["007"]
    assert "2 of 4" in f["observed"]


def test_null_item_id(tmp_path: Path, expectations_dir: Path) -> None:
    root = write_batch(tmp_path / "b", items="item_id,title\n1,a\n2,b\n3,c\n,orphan\n")
    f = _only_failure(_validate(root, expectations_dir))
    assert (f["dataset"], f["column"], f["rule"]) == ("items", "item_id", "id_not_null")
    assert f["file"].endswith("items.csv")
    assert f["sample"] == [{"_row": 3, "item_id": None, "title": "orphan"}]


def test_blank_title(tmp_path: Path, expectations_dir: Path) -> None:
    root = write_batch(tmp_path / "b", items='item_id,title\n1,a\n2,"   "\n3,c\n')
    f = _only_failure(_validate(root, expectations_dir))
    assert (f["column"], f["rule"]) == ("title", "title_not_blank")


def test_unknown_user_in_interactions(tmp_path: Path, expectations_dir: Path) -> None:
    root = write_batch(tmp_path / "b", interactions=INTERACTIONS_CSV + "042,1,881250949,4\n")
    f = _only_failure(_validate(root, expectations_dir))
    assert (f["dataset"], f["column"], f["rule"]) == ("interactions", "user_id", "user_id_known")
    assert f["file"].endswith("interactions.csv")
    assert f["sample"] == ["042"]


def test_known_ids_from_earlier_batches_are_accepted(tmp_path: Path,
                                                     expectations_dir: Path) -> None:
    root = write_batch(tmp_path / "b", interactions=INTERACTIONS_CSV + "042,99,881250949,4\n")
    report = _validate(root, expectations_dir, known_user_ids=["042"], known_item_ids={"99"})
    assert report.success, report.failures


def test_bad_timestamp(tmp_path: Path, expectations_dir: Path) -> None:
    root = write_batch(tmp_path / "b", interactions=INTERACTIONS_CSV + "007,3,next tuesday,4\n")
    f = _only_failure(_validate(root, expectations_dir))
    assert (f["column"], f["rule"]) == ("timestamp", "timestamp_parseable")
    assert f["sample"] == ["next tuesday"]


def test_millisecond_timestamp_is_out_of_range(tmp_path: Path, expectations_dir: Path) -> None:
    root = write_batch(tmp_path / "b", interactions=INTERACTIONS_CSV + "007,3,1700000000000,4\n")
    f = _only_failure(_validate(root, expectations_dir))
    assert (f["column"], f["rule"]) == ("timestamp", "timestamp_in_range")


def test_rating_out_of_range_and_not_numeric(tmp_path: Path, expectations_dir: Path) -> None:
    root = write_batch(tmp_path / "b",
                       interactions=INTERACTIONS_CSV + "007,3,881250949,11\n008,2,881250949,-1\n"
                                                       "009,1,881250949,great\n")
    report = _validate(root, expectations_dir)
    rules = {f["rule"]: f for f in report.failures}
    assert set(rules) == {"rating_in_range", "rating_numeric"}
    assert rules["rating_in_range"]["column"] == "rating"
    assert sorted(rules["rating_in_range"]["sample"]) == [-1.0, 11.0]
    assert rules["rating_numeric"]["sample"] == ["great"]


def test_negative_weight(tmp_path: Path, expectations_dir: Path) -> None:
    root = write_batch(tmp_path / "b", interactions="user_id,item_id,timestamp,weight\n"
                                                    "007,1,881250949,1.5\n007,2,881250949,-2\n")
    f = _only_failure(_validate(root, expectations_dir))
    assert (f["column"], f["rule"], f["sample"]) == ("weight", "weight_non_negative", [-2.0])


def test_header_only_table_is_empty(tmp_path: Path, expectations_dir: Path) -> None:
    root = write_batch(tmp_path / "b", interactions="user_id,item_id,timestamp\n")
    f = _only_failure(_validate(root, expectations_dir))
    assert (f["dataset"], f["rule"]) == ("interactions", "row_count_in_bounds")
    assert "0" in f["observed"]


def test_missing_column_in_a_hand_built_batch(batch_dir: Path, expectations_dir: Path) -> None:
    batch = read_batch(batch_dir)
    batch = replace(batch, items=batch.items.drop(columns=["title"]))
    report = validate_batch(batch, expectations_dir=expectations_dir,
                            settings=Settings(data_dir=batch_dir.parent / "data"))
    assert not report.success
    missing = [f for f in report.failures if f["rule"] == "required_column"]
    assert missing and missing[0]["column"] == "title" and missing[0]["dataset"] == "items"


def test_report_markdown_names_file_column_and_rule(tmp_path: Path,
                                                    expectations_dir: Path) -> None:
    root = write_batch(tmp_path / "b", users="user_id\n007\n007\n008\n009\n")
    report = _validate(root, expectations_dir)
    md = report.to_markdown()
    assert "FAILED" in md and "users.csv" in md and "`user_id`" in md and "id_unique" in md
    json.dumps(report.to_dict())


def test_future_timestamp_uses_the_clock_and_tolerance(tmp_path: Path,
                                                       expectations_dir: Path) -> None:
    root = write_batch(tmp_path / "b", interactions=INTERACTIONS_CSV + "007,3,2030-01-01,4\n")
    settings = Settings(data_dir=tmp_path / "data", future_timestamp_tolerance_s=60)
    before = validate_batch(read_batch(root), expectations_dir=expectations_dir,
                            settings=settings, now=pd.Timestamp("2029-12-31 23:58", tz="UTC"))
    f = _only_failure(before)
    assert (f["column"], f["rule"], f["sample"]) == ("timestamp", "timestamp_not_future",
                                                    ["2030-01-01"])
    assert f["rows"][0]["_row"] == 4 and f["rows"][0]["user_id"] == "007"
    within = validate_batch(read_batch(root), expectations_dir=expectations_dir,
                            settings=settings, now=pd.Timestamp("2029-12-31 23:59:30", tz="UTC"))
    assert within.success, within.failures


def test_schema_drift_names_the_unexpected_column(tmp_path: Path,
                                                  expectations_dir: Path) -> None:
    root = write_batch(tmp_path / "b", interactions="user_id,item_id,timestamp,price\n"
                                                    "007,1,881250949,9.99\n")
    f = _only_failure(_validate(root, expectations_dir))
    assert (f["dataset"], f["rule"], f["column"]) == ("interactions", "schema_drift", None)
    assert f["observed"] == "unexpected columns: price"
