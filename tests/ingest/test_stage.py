"""`ingest_batch`: policies, reports, Data Docs, known ids from earlier batches, and the one
copy of a valid batch in the raw store."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pandas as pd
import pytest

from ingest.raw_store import list_batches
from ingest.report import ValidationReport
from ingest.stage import ingest_batch
from recsys.errors import ValidationFailed
from recsys.settings import DatasetContract, Settings

from .conftest import INTERACTIONS_CSV, store_contents, stored_table, write_batch

BAD_ROWS = "042,1,881250949,4\n007,3,next tuesday,4\n"  # unknown user; unparseable time


def _settings(tmp_path: Path, **kwargs: object) -> Settings:
    return Settings(data_dir=tmp_path / "data", validation_data_docs=False, **kwargs)


def test_valid_batch_is_stored_and_reported_with_data_docs(tmp_path: Path) -> None:
    root = write_batch(tmp_path / "b")
    settings = Settings(data_dir=tmp_path / "data")
    seen: list[ValidationReport] = []

    result = ingest_batch(root, run_id="r1", settings=settings, on_report=seen.append)
    report = result.report

    assert report.success and seen == [report]
    assert result.stored.rows == {"users": 3, "items": 3, "interactions": 4}
    assert list_batches(settings.store_dir) == [
        replace(result.stored, skipped=False)]
    run_dir = settings.validation_dir / "r1"
    assert json.loads((run_dir / "report.json").read_text())["success"] is True
    assert report.data_docs == str(run_dir / "data-docs" / "index.html")
    index = Path(report.data_docs).read_text()
    assert "interactions" in index and "users" in index
    assert root.is_dir()  # a valid batch stays where it is

    markdown = report.to_markdown()
    assert "| suite | expectation | column | rule | success | observed value | Data Docs |" \
        in markdown
    assert "`expect_column_values_to_be_unique`" in markdown
    assert Path(report.data_docs).resolve().as_uri() in markdown


def test_fail_policy_rejects_and_reports_before_raising(tmp_path: Path) -> None:
    root = write_batch(tmp_path / "b", interactions=INTERACTIONS_CSV + BAD_ROWS)
    settings = _settings(tmp_path)
    seen: list[ValidationReport] = []

    with pytest.raises(ValidationFailed) as info:
        ingest_batch(root, run_id="r2", settings=settings, on_report=seen.append)

    assert {f["rule"] for f in info.value.failures} == {"user_id_known", "timestamp_parseable"}
    assert seen and not seen[0].success
    assert not root.exists() and (settings.quarantine_dir / "r2" / "report.json").is_file()
    assert store_contents(settings) == []  # nothing in the store, no staging folder left


def test_drop_policy_removes_invalid_rows_and_keeps_them_aside(tmp_path: Path) -> None:
    root = write_batch(tmp_path / "b", interactions=INTERACTIONS_CSV + BAD_ROWS)
    settings = _settings(tmp_path, contracts={
        "interactions": DatasetContract(policy="drop", max_invalid_fraction=0.5)})

    result = ingest_batch(root, run_id="r3", settings=settings)
    report = result.report

    assert report.success and report.failures == []
    dropped = report.dropped["interactions"]
    assert dropped["rows"] == 2 and dropped["fraction"] == pytest.approx(2 / 6)
    assert set(dropped["rules"]) == {"user_id_known", "timestamp_parseable"}
    aside = pd.read_csv(dropped["file"], dtype=str)
    assert sorted(aside["user_id"]) == ["007", "042"]
    assert dict(zip(aside["user_id"], aside["_failed_rules"], strict=True)) == {
        "042": "user_id_known", "007": "timestamp_parseable"}
    kept = stored_table(settings, result.stored, "interactions").to_pandas()
    assert len(kept) == 4 and "042" not in set(kept["user_id"])
    assert "Dropped rows" in report.to_markdown()


def test_drop_policy_rejects_above_the_threshold(tmp_path: Path) -> None:
    root = write_batch(tmp_path / "b", interactions=INTERACTIONS_CSV + BAD_ROWS)
    settings = _settings(tmp_path, contracts={
        "interactions": DatasetContract(policy="drop", max_invalid_fraction=0.1)})

    with pytest.raises(ValidationFailed) as info:
        ingest_batch(root, run_id="r4", settings=settings)

    rules = [f["rule"] for f in info.value.failures]
    assert "invalid_fraction_within_bound" in rules
    assert "2 of 6 rows invalid (33.33%) > max 10.00%" in str(info.value)
    assert (settings.quarantine_dir / "r4" / "interactions.csv").is_file()


def test_dropped_users_make_their_interactions_unknown(tmp_path: Path) -> None:
    root = write_batch(tmp_path / "b", users="user_id,age\n007,24\n008,999\n009,23\n")
    settings = _settings(tmp_path, contracts={
        "users": DatasetContract(policy="drop", max_invalid_fraction=0.5)})

    with pytest.raises(ValidationFailed) as info:
        ingest_batch(root, run_id="r5", settings=settings)

    (failure,) = info.value.failures
    assert (failure["rule"], failure["sample"]) == ("user_id_known", ["008"])


def test_table_level_failure_is_not_dropped(tmp_path: Path) -> None:
    root = write_batch(tmp_path / "b", interactions="user_id,item_id,timestamp,extra\n"
                                                    "007,1,881250949,x\n")
    settings = _settings(tmp_path, contracts={
        "interactions": DatasetContract(policy="drop", max_invalid_fraction=1.0)})
    with pytest.raises(ValidationFailed, match="schema_drift"):
        ingest_batch(root, run_id="r6", settings=settings)


def test_settings_bounds_reach_the_suites(tmp_path: Path) -> None:
    root = write_batch(tmp_path / "b")  # ratings 1..5
    with pytest.raises(ValidationFailed, match="rating_in_range"):
        ingest_batch(root, run_id="r7", settings=_settings(tmp_path, rating_max=4))
    root = write_batch(tmp_path / "b2")
    with pytest.raises(ValidationFailed, match="row_count_in_bounds"):
        ingest_batch(root, run_id="r8", settings=_settings(tmp_path, contracts={
            "users": DatasetContract(min_rows=10, extra_columns="allow")}))


def test_contracts_from_json_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RECSYS_CONTRACTS",
                       '{"interactions": {"policy": "drop", "max_invalid_fraction": 0.02}}')
    settings = Settings()
    assert settings.contract("interactions").policy == "drop"
    assert settings.contract("interactions").max_invalid_fraction == 0.02
    assert settings.contract("users").extra_columns == "allow"  # left out: default
    monkeypatch.setenv("RECSYS_CONTRACTS", '{"users": {"polcy": "drop"}}')
    with pytest.raises(ValueError):
        Settings()


def test_ids_known_from_earlier_batches(tmp_path: Path) -> None:
    settings = _settings(tmp_path)
    first = write_batch(tmp_path / "b1", users="user_id\n007\n008\n009\n042\n")
    ingest_batch(first, run_id="r9", settings=settings)

    second = write_batch(tmp_path / "b2", users="user_id\n007\n008\n009\n",
                         interactions=INTERACTIONS_CSV + "042,1,881250949,4\n")
    report = ingest_batch(second, run_id="r10", settings=settings).report
    assert report.success, report.failures


def test_a_valid_batch_is_written_once_into_the_store(tmp_path: Path) -> None:
    """Regression (issue 12): the validated batch used to be kept twice, as normalized parquet
    under raw/<run id>/ (never pruned) and again in the store."""
    settings = _settings(tmp_path)
    result = ingest_batch(write_batch(tmp_path / "b"), run_id="once", settings=settings)

    assert not (settings.data_dir / "raw").exists()
    stored = result.stored
    assert not stored.skipped and [b.batch_id for b in list_batches(settings.store_dir)] == [
        stored.batch_id]
    files = [f for name in ("users", "items", "interactions") for f in stored.files[name]]
    # The batch's partitions and marker, the store's lock, and nothing else: no staging folder.
    assert store_contents(settings) == sorted(
        {".lock", "batches", f"batches/{stored.batch_id}.json", "users", "items",
         "interactions", *files, *(str(Path(f).parent) for f in files)})
    inter = stored_table(settings, stored, "interactions")
    assert inter.num_rows == 4 and sorted(inter.column("user_id").to_pylist()) == [
        "007", "007", "008", "009"]

    again = ingest_batch(write_batch(tmp_path / "b2"), run_id="twice", settings=settings)
    assert again.stored.skipped and again.stored.batch_id == stored.batch_id
    assert len(list_batches(settings.store_dir)) == 1
    assert stored_table(settings, stored, "interactions").num_rows == 4


def test_a_failed_batch_writes_nothing_into_the_store(tmp_path: Path) -> None:
    settings = _settings(tmp_path)
    ingest_batch(write_batch(tmp_path / "ok"), run_id="ok", settings=settings)
    before = store_contents(settings)
    bad = write_batch(tmp_path / "bad", interactions=INTERACTIONS_CSV + BAD_ROWS)

    with pytest.raises(ValidationFailed):
        ingest_batch(bad, run_id="bad", settings=settings)

    assert store_contents(settings) == before
    assert len(list_batches(settings.store_dir)) == 1


def test_a_store_error_leaves_no_staging_folder(tmp_path: Path,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    import ingest.stage as stage

    def broken_commit(files: dict[str, Path], *, raw_root: Path) -> None:
        assert all(Path(f).parent.parent == raw_root / "_incoming" for f in files.values())
        raise OSError("disk full")

    monkeypatch.setattr(stage, "commit_batch", broken_commit)
    settings = _settings(tmp_path)
    with pytest.raises(OSError, match="disk full"):
        ingest_batch(write_batch(tmp_path / "b"), run_id="r", settings=settings)
    assert store_contents(settings) == []


def test_an_id_with_stray_whitespace_is_the_same_id(tmp_path: Path) -> None:
    """Regression (issue 13): "u0000001 " was published beside "u0000001" as another user.
    Ids are trimmed when read, so the repeat is a duplicate the contract rejects, and an
    interaction naming "007 " belongs to user "007"."""
    settings = _settings(tmp_path)
    with pytest.raises(ValidationFailed) as info:
        ingest_batch(write_batch(tmp_path / "dup", users="user_id\n007\n007 \n008\n009\n"),
                     run_id="dup", settings=settings)
    assert [(f["rule"], f["sample"]) for f in info.value.failures] == [("id_unique", ["007"])]

    result = ingest_batch(write_batch(tmp_path / "ok", users="user_id\n007  \n008\n009\n",
                                      interactions=INTERACTIONS_CSV + " 009 ,\t2,881250949,3\n"),
                          run_id="ok", settings=settings)
    users = stored_table(settings, result.stored, "users").column("user_id").to_pylist()
    inter = stored_table(settings, result.stored, "interactions").to_pandas()
    assert sorted(users) == ["007", "008", "009"]
    assert set(inter["user_id"]) == {"007", "008", "009"} and set(inter["item_id"]) <= {
        "1", "2", "3"}
