"""Chunked validation (`RECSYS_VALIDATE_CHUNK_ROWS`): the same verdict, report and stored batch
as the whole-frame path, on batches read 7 rows at a time."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import ingest.stage
from ingest.reader import read_batch
from ingest.report import ValidationReport
from ingest.stage import ingest_batch
from ingest.validate import validate_batch
from recsys.errors import InputFileError, ValidationFailed
from recsys.settings import DatasetContract, Settings

from .conftest import store_contents, stored_table, write_batch

CHUNK_ROWS = 7
NOW = pd.Timestamp("2025-01-01", tz="UTC")
HEADER = "user_id,item_id,timestamp,rating"


def _valid_rows() -> list[str]:
    """30 interactions of users 007-009 and items 1-3, every (user, item, time) distinct."""
    return [f"00{7 + i % 3},{1 + i % 3},2024-01-{1 + i % 28:02d}T{i % 24:02d}:00:00,{1 + i % 5}"
            for i in range(30)]


def _broken_rows() -> list[str]:
    rows = _valid_rows()
    rows[3] = "042,1,2024-02-01T00:00:00,4"  # unknown user
    rows[6] = rows[7]  # a duplicate straddling the first chunk boundary (rows 6 | 7)
    rows[9] = "007,2,next tuesday,4"  # unparseable timestamp
    rows[12] = "008,3,2024-02-02T00:00:00,11"  # rating out of range
    rows[15] = ",1,2024-02-03T00:00:00,3"  # null user_id
    rows[16] = "009,,2024-02-04T00:00:00,3"  # null item_id
    rows[20] = "043,1,2024-02-05T00:00:00,4"  # another unknown user
    rows[27] = rows[2]  # a duplicate four chunks apart
    return rows


def _write(root: Path, rows: list[str], fmt: str, header: str = HEADER) -> Path:
    text = header + "\n" + "\n".join(rows) + "\n"
    if fmt == "csv":
        return write_batch(root, interactions=text)
    root = write_batch(root, interactions=None)
    frame = pd.read_csv(pd.io.common.StringIO(text), dtype={"user_id": str, "item_id": str})
    # Row groups of 5 rows: chunks of 7 cut across them.
    pq.write_table(pa.Table.from_pandas(frame, preserve_index=False),
                   root / "interactions.parquet", row_group_size=5)
    return root


def _settings(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, chunked: bool,
              **kwargs: Any) -> Settings:
    if chunked:
        monkeypatch.setenv("RECSYS_VALIDATE_CHUNK_ROWS", str(CHUNK_ROWS))
    else:
        monkeypatch.delenv("RECSYS_VALIDATE_CHUNK_ROWS", raising=False)
    settings = Settings(data_dir=tmp_path / ("chunked" if chunked else "whole"),
                        validation_data_docs=False, **kwargs)
    assert settings.validate_chunk_rows == (CHUNK_ROWS if chunked else 1_000_000)
    return settings


def _ingest_both(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, rows: list[str], fmt: str,
                 *, header: str = HEADER, **kwargs: Any
                 ) -> dict[str, tuple[Any, ValidationReport, Settings, Path]]:
    """Ingest two copies of one batch, whole and in chunks: (stored tables or error, report,
    settings, batch folder). Each copy's normalized files are checked as they are committed."""
    outcomes = {}
    for mode in ("whole", "chunked"):
        root = _write(tmp_path / f"batch-{mode}", rows, fmt, header)
        settings = _settings(tmp_path, monkeypatch, mode == "chunked", **kwargs)
        seen: list[ValidationReport] = []
        try:
            stored = ingest_batch(root, run_id="run", settings=settings, now=NOW,
                                  on_report=seen.append).stored
            files: Any = {name: stored_table(settings, stored, name)
                          for name in ("users", "items", "interactions")}
        except (ValidationFailed, InputFileError) as error:
            files = error
        outcomes[mode] = (files, seen[0], settings, root)
    return outcomes


@pytest.fixture
def committed(monkeypatch: pytest.MonkeyPatch) -> list[dict[str, pa.Table]]:
    """The normalized files each `ingest_batch` hands to the raw store, read as they are
    committed (the staging folder they sit in is gone afterwards)."""
    seen: list[dict[str, pa.Table]] = []
    commit = ingest.stage.commit_batch

    def recording_commit(files: dict[str, Path], *, raw_root: Path) -> Any:
        seen.append({name: pq.read_table(path) for name, path in files.items()})
        seen[-1]["row_groups"] = pq.ParquetFile(files["interactions"]).num_row_groups
        return commit(files, raw_root=raw_root)

    monkeypatch.setattr(ingest.stage, "commit_batch", recording_commit)
    return seen


def _comparable(report: ValidationReport, settings: Settings, root: Path) -> dict[str, Any]:
    """The report as JSON with this copy's folders and the timings taken out."""
    document = report.to_dict()
    for suite in document["suites"]:
        suite.pop("seconds")
    text = json.dumps(document).replace(str(root), "<batch>")
    return json.loads(text.replace(str(settings.data_dir), "<data>"))


def _same_reports(outcomes: dict[str, tuple[Any, ValidationReport, Settings, Path]]) -> None:
    whole, chunked = (_comparable(*outcomes[m][1:]) for m in ("whole", "chunked"))
    assert chunked == whole


@pytest.mark.parametrize("fmt", ["csv", "parquet"])
def test_broken_batch_fails_with_the_same_failures(tmp_path: Path, fmt: str,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    outcomes = _ingest_both(tmp_path, monkeypatch, _broken_rows(), fmt)

    assert all(isinstance(o[0], ValidationFailed) for o in outcomes.values())
    _same_reports(outcomes)
    failures = {(f["rule"], f["column"]): f for f in outcomes["chunked"][1].failures}
    assert set(failures) == {
        ("id_not_null", "user_id"), ("id_not_null", "item_id"), ("user_id_known", "user_id"),
        ("timestamp_parseable", "timestamp"), ("rating_in_range", "rating"),
        ("duplicate_interactions_bounded", None)}
    assert failures[("user_id_known", "user_id")]["sample"] == ["042", "043"]
    assert failures[("user_id_known", "user_id")]["observed"] == \
        "2 of 30 rows unexpected (6.67%)"
    assert failures[("timestamp_parseable", "timestamp")]["sample"] == ["next tuesday"]
    assert failures[("rating_in_range", "rating")]["sample"] == [11.0]
    assert failures[("id_not_null", "item_id")]["sample"][0]["_row"] == 16
    duplicates = failures[("duplicate_interactions_bounded", None)]
    assert duplicates["observed"] == "4 of 30 rows unexpected (13.33%)"
    assert [r["_row"] for r in duplicates["rows"]] == [2, 6, 7, 27]  # global row numbers
    assert outcomes["chunked"][1].suites[2]["rows"] == 30


# CSV's own chunk typing is pinned by the other tests here; this one runs it as a slow test
@pytest.mark.parametrize("fmt", [pytest.param("csv", marks=pytest.mark.slow), "parquet"])
def test_valid_batch_writes_the_same_parquet(tmp_path: Path, fmt: str,
                                             monkeypatch: pytest.MonkeyPatch,
                                             committed: list[dict[str, Any]]) -> None:
    outcomes = _ingest_both(tmp_path, monkeypatch, _valid_rows(), fmt)

    _same_reports(outcomes)
    (whole_files, chunked_files) = committed
    for dataset in ("users", "items", "interactions"):
        expected, got = whole_files[dataset], chunked_files[dataset]
        assert got.schema.equals(expected.schema), dataset
        assert got.equals(expected), dataset
    assert chunked_files["row_groups"] > 1  # appended per chunk
    whole, chunked = outcomes["whole"][0], outcomes["chunked"][0]
    for dataset in whole:  # and so the store holds the same rows
        assert chunked[dataset].equals(whole[dataset]), dataset
    assert chunked["interactions"].num_rows == 30
    assert not any(p.startswith("_") for p in store_contents(outcomes["chunked"][2]))


# CSV's own chunk typing is pinned by the other tests here; this one runs it as a slow test
@pytest.mark.parametrize("fmt", [pytest.param("csv", marks=pytest.mark.slow), "parquet"])
def test_drop_policy_writes_the_same_kept_and_dropped_rows(tmp_path: Path, fmt: str,
                                                            monkeypatch: pytest.MonkeyPatch
                                                            ) -> None:
    # No duplicate tolerated: the duplicate rule is row-level, so both copies of each key are
    # dropped, including the pair that straddles a chunk boundary.
    outcomes = _ingest_both(
        tmp_path, monkeypatch, _broken_rows(), fmt, max_duplicate_interaction_fraction=0.0,
        contracts={"interactions": DatasetContract(policy="drop", max_invalid_fraction=0.5)})

    _same_reports(outcomes)
    (whole, whole_report, *_), (chunked, report, *_) = outcomes["whole"], outcomes["chunked"]
    assert report.success
    assert report.dropped["interactions"]["rows"] == 10
    kept = chunked["interactions"]
    assert kept.equals(whole["interactions"])
    assert kept.num_rows == 20
    # Regression: two expectations share the rule id_not_null (user_id, item_id); the whole
    # path used to drop only the last one's rows and keep a null user_id.
    assert kept.column("user_id").null_count == kept.column("item_id").null_count == 0
    aside_whole = Path(whole_report.dropped["interactions"]["file"])
    aside = Path(report.dropped["interactions"]["file"])
    assert aside.name == aside_whole.name == f"interactions.{fmt}"
    if fmt == "csv":
        assert aside.read_text() == aside_whole.read_text()
        rules = pd.read_csv(aside, dtype=str)["_failed_rules"]
        assert (rules == "duplicate_interactions_bounded").sum() == 4  # rows 2, 6, 7, 27
    else:
        assert pq.read_table(aside).equals(pq.read_table(aside_whole))


def test_extra_columns_get_one_type_over_the_whole_file(tmp_path: Path,
                                                        monkeypatch: pytest.MonkeyPatch,
                                                        committed: list[dict[str, Any]]
                                                        ) -> None:
    # "score" is int in the first chunk, float (a fraction, an empty cell) in later ones.
    rows = [f"{row},{i},web" for i, row in enumerate(_valid_rows())]
    rows[12] = rows[12].replace(",12,web", ",12.5,web")
    rows[25] = rows[25].replace(",25,web", ",,app")
    outcomes = _ingest_both(tmp_path, monkeypatch, rows, "csv", header=HEADER + ",score,source",
                            contracts={"interactions": DatasetContract(extra_columns="allow")})
    whole, chunked = outcomes["whole"][0], outcomes["chunked"][0]

    expected, got = (files["interactions"] for files in committed)
    assert expected.schema.field("score").type == pa.float64()
    assert got.schema.equals(expected.schema) and got.equals(expected)
    stored = chunked["interactions"]
    assert stored.schema.field("score").type == pa.float64()
    assert stored.equals(whole["interactions"])


def test_failing_chunked_batch_writes_nothing_into_the_store_and_is_quarantined(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    root = _write(tmp_path / "batch", _broken_rows(), "parquet")
    settings = _settings(tmp_path, monkeypatch, chunked=True)

    with pytest.raises(ValidationFailed) as info:
        ingest_batch(root, run_id="bad", settings=settings, now=NOW)

    assert info.value.quarantine_dir == settings.quarantine_dir / "bad"
    assert (settings.quarantine_dir / "bad" / "interactions.parquet").is_file()
    assert json.loads((settings.quarantine_dir / "bad" / "report.json").read_text())[
        "success"] is False
    assert not root.exists()
    assert store_contents(settings) == []  # chunks written while validating are gone too


def test_file_broken_past_the_first_chunk_is_quarantined(tmp_path: Path,
                                                         monkeypatch: pytest.MonkeyPatch
                                                         ) -> None:
    rows = _valid_rows()
    rows[20] += ",surplus,fields"
    outcomes = _ingest_both(tmp_path, monkeypatch, rows, "csv")

    errors = [outcomes[m][0] for m in ("whole", "chunked")]
    assert all(isinstance(e, InputFileError) for e in errors)
    assert errors[1].rule == errors[0].rule == "csv_parseable"
    problems = [e.problem.split(" (batch quarantined")[0] for e in errors]
    assert problems[1] == problems[0]  # the same line number: chunks count lines globally
    assert "line 22" in problems[1]
    _same_reports(outcomes)
    settings = outcomes["chunked"][2]
    assert (settings.quarantine_dir / "run" / "interactions.csv").is_file()
    assert store_contents(settings) == []


def test_duplicates_count_the_same_when_chunks_type_a_column_differently(
        tmp_path: Path, expectations_dir: Path) -> None:
    # Unix seconds everywhere but one unparseable value: a whole read makes the column text,
    # chunks make it int in all chunks but one. Duplicates straddle such chunks.
    rows = [f"00{7 + i % 3},{1 + i % 3},{881250949 + i},{1 + i % 5}" for i in range(30)]
    rows[9] = "007,2,next tuesday,4"
    rows[8] = rows[12]  # text chunk (rows 7-13) and ...
    rows[20] = rows[1]  # ... int chunks
    rows[25] = ",,,"  # an all-null key: ignored, as GE ignores it
    rows[26] = "007,,881250999,1"
    rows[27] = "007,,881250999,1"  # a partly null key still counts
    root = _write(tmp_path / "b", rows, "csv")
    settings = Settings(data_dir=tmp_path / "data", max_duplicate_interaction_fraction=0.0)

    reports = [validate_batch(read_batch(root, chunk_rows=chunk_rows),
                              expectations_dir=expectations_dir, settings=settings, now=NOW)
               for chunk_rows in (None, CHUNK_ROWS)]

    observed = [{f["rule"]: f["observed"] for f in r.failures} for r in reports]
    assert observed[1] == observed[0]
    assert observed[1]["duplicate_interactions_bounded"] == "6 of 30 rows unexpected (20.00%)"


def test_chunks_are_numbered_like_a_whole_read(tmp_path: Path) -> None:
    from ingest.reader import TableChunks

    frame = pd.DataFrame({"user_id": [1, 2, 3, 4, 5, 6], "item_id": ["a"] * 6,
                          "timestamp": range(6)})
    frame.iloc[::2].to_parquet(tmp_path / "stepped.parquet")  # pandas keeps a RangeIndex(0, 6, 2)
    (tmp_path / "plain.csv").write_text(frame.to_csv(index=False))
    for name in ("stepped.parquet", "plain.csv"):
        path = tmp_path / name
        whole = pd.concat(list(TableChunks(path, "interactions", chunk_rows=100)))
        chunked = pd.concat(list(TableChunks(path, "interactions", chunk_rows=2)))
        pd.testing.assert_frame_equal(chunked, whole)
    assert list(whole.index) == [0, 1, 2, 3, 4, 5]
    stepped = pd.concat(list(TableChunks(tmp_path / "stepped.parquet", "interactions", 2)))
    assert list(stepped.index) == [0, 2, 4] and stepped["user_id"].tolist() == ["1", "3", "5"]


def test_chunk_rows_setting(monkeypatch: pytest.MonkeyPatch) -> None:
    assert Settings().validate_chunk_rows == 1_000_000
    monkeypatch.setenv("RECSYS_VALIDATE_CHUNK_ROWS", "0")
    with pytest.raises(ValueError):
        Settings()


def test_suites_needing_the_whole_table_are_refused(tmp_path: Path,
                                                    expectations_dir: Path) -> None:
    suites = tmp_path / "suites"
    shutil.copytree(expectations_dir, suites)
    spec = json.loads((suites / "interactions.json").read_text())
    spec["expectations"].append({"type": "expect_column_values_to_be_unique",
                                 "kwargs": {"column": "timestamp"}})
    (suites / "interactions.json").write_text(json.dumps(spec))
    root = _write(tmp_path / "b", _valid_rows(), "csv")

    with pytest.raises(ValueError, match="expect_column_values_to_be_unique"):
        validate_batch(read_batch(root, chunk_rows=CHUNK_ROWS), expectations_dir=suites,
                       settings=Settings(data_dir=tmp_path / "data"), now=NOW)
