from __future__ import annotations

from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from ingest.reader import read_batch
from recsys.errors import InputFileError

from .conftest import write_batch


def test_reads_valid_csv_batch_with_ids_as_strings(batch_dir: Path) -> None:
    batch = read_batch(batch_dir)

    assert batch.users["user_id"].tolist() == ["007", "008", "009"]
    assert batch.items["item_id"].tolist() == ["1", "2", "3"]
    assert batch.interactions["user_id"].tolist() == ["007", "007", "008", "009"]
    assert all(isinstance(v, str) for v in batch.interactions["item_id"])
    assert batch.sources == {name: batch_dir / f"{name}.csv"
                             for name in ("users", "items", "interactions")}


def test_reads_parquet_and_turns_numeric_ids_into_strings(tmp_path: Path) -> None:
    root = write_batch(tmp_path / "b", users=None, items=None)
    pq.write_table(pa.table({"user_id": [7, 8, 9], "age": [1, 2, 3]}), root / "users.parquet")
    pq.write_table(pa.table({"item_id": [1.0, 2.0, 3.0], "title": ["a", "b", "c"],
                             "genres": [["x", "y"], [], None]}), root / "items.parquet")

    batch = read_batch(root)

    assert batch.users["user_id"].tolist() == ["7", "8", "9"]
    assert batch.items["item_id"].tolist() == ["1", "2", "3"]
    assert batch.sources["users"].suffix == ".parquet"


def _error(root: Path) -> InputFileError:
    with pytest.raises(InputFileError) as info:
        read_batch(root)
    return info.value


def test_missing_directory(tmp_path: Path) -> None:
    err = _error(tmp_path / "nope")
    assert "does not exist" in str(err) and "nope" in str(err)


def test_missing_file_names_the_file(tmp_path: Path) -> None:
    err = _error(write_batch(tmp_path / "b", items=None))
    assert "items.csv" in str(err) and "items.parquet" in str(err)
    assert err.rule == "file_exists"


def test_both_csv_and_parquet_present(tmp_path: Path) -> None:
    root = write_batch(tmp_path / "b")
    pq.write_table(pa.table({"user_id": ["1"]}), root / "users.parquet")
    err = _error(root)
    assert "users.csv" in str(err) and "users.parquet" in str(err)
    assert err.rule == "one_file_per_table"


def test_empty_file(tmp_path: Path) -> None:
    err = _error(write_batch(tmp_path / "b", interactions=""))
    assert err.path.name == "interactions.csv"
    assert err.rule == "non_empty_file"
    assert "empty" in str(err)


def test_binary_garbage_in_csv(tmp_path: Path) -> None:
    err = _error(write_batch(tmp_path / "b", users=b"\x00\x01\x02\xff\xfe garbage \x00" * 50))
    assert err.path.name == "users.csv"
    assert "binary" in str(err)


def test_bad_encoding(tmp_path: Path) -> None:
    latin1 = "item_id,title\n1,Caf\xe9 Society\n".encode("latin-1")
    err = _error(write_batch(tmp_path / "b", items=latin1))
    assert err.path.name == "items.csv"
    assert err.rule == "utf8_encoding"


def test_garbage_parquet(tmp_path: Path) -> None:
    root = write_batch(tmp_path / "b", users=None, **{"users.parquet": b"not parquet at all"})
    err = _error(root)
    assert err.path.name == "users.parquet"
    assert err.rule == "parquet_readable"


def test_truncated_parquet(tmp_path: Path) -> None:
    root = write_batch(tmp_path / "b", users=None)
    pq.write_table(pa.table({"user_id": ["1", "2"]}), root / "users.parquet")
    data = (root / "users.parquet").read_bytes()
    (root / "users.parquet").write_bytes(data[: len(data) // 2])
    err = _error(root)
    assert err.path.name == "users.parquet"


def test_unparseable_csv(tmp_path: Path) -> None:
    err = _error(write_batch(tmp_path / "b", users="user_id,age\n1,2\n3,4,5,6\n"))
    assert err.path.name == "users.csv"
    assert err.rule == "csv_parseable"


@pytest.mark.parametrize(
    ("dataset", "content", "column"),
    [
        ("users", "id,age\n1,2\n", "user_id"),
        ("items", "item_id,name\n1,x\n", "title"),
        ("interactions", "user_id,item_id,rating\n007,1,5\n", "timestamp"),
    ],
)
def test_missing_required_column(tmp_path: Path, dataset: str, content: str, column: str) -> None:
    err = _error(write_batch(tmp_path / "b", **{dataset: content}))
    assert err.path.name == f"{dataset}.csv"
    assert err.column == column
    assert err.rule == "required_column"
    assert f"column '{column}'" in str(err)


def test_na_like_strings_are_ids_not_nulls(tmp_path: Path) -> None:
    root = write_batch(tmp_path / "b", users="user_id\nNA\nnull\n")
    batch = read_batch(root)
    assert batch.users["user_id"].tolist() == ["NA", "null"]
    assert not pd.isna(batch.users["user_id"]).any()


# ------------------------------------------------ issue 13: garbage types are not data


def _parquet_batch(root: Path, **tables: pa.Table) -> Path:
    write_batch(root, **{name: None for name in tables})
    for name, table in tables.items():
        pq.write_table(table, root / f"{name}.parquet")
    return root


@pytest.mark.parametrize(("dataset", "column", "table"), [
    ("users", "user_id", pa.table({"user_id": [{"id": "u1"}, {"id": "u2"}]})),
    ("users", "user_id", pa.table({"user_id": [["u1"], ["u2"]]})),
    ("users", "user_id", pa.table({"user_id": [True, False]})),
    ("users", "user_id", pa.table({"user_id": [1.5, 2.0]})),
    ("interactions", "item_id", pa.table({"user_id": ["007"], "item_id": [{"id": 1}],
                                          "timestamp": [881250949]})),
])
def test_id_columns_must_be_text_or_integers(tmp_path: Path, dataset: str, column: str,
                                             table: pa.Table) -> None:
    """Regression (issue 13): a parquet user_id of struct type became ids like
    "{'id': 'u0000001'}"."""
    err = _error(_parquet_batch(tmp_path / "b", **{dataset: table}))
    assert err.path.name == f"{dataset}.parquet"
    assert (err.column, err.rule) == (column, "id_type")
    assert f"column '{column}'" in str(err)


def test_chunked_interactions_are_checked_too(tmp_path: Path) -> None:
    table = pa.table({"user_id": [{"id": "007"}] * 5, "item_id": ["1"] * 5,
                      "timestamp": [881250949] * 5})
    with pytest.raises(InputFileError) as info:
        read_batch(_parquet_batch(tmp_path / "b", interactions=table), chunk_rows=2)
    assert (info.value.column, info.value.rule) == ("user_id", "id_type")


@pytest.mark.parametrize(("dataset", "column", "table"), [
    ("items", "title", pa.table({"item_id": ["1"], "title": [["Toy Story"]]})),
    ("items", "genres", pa.table({"item_id": ["1"], "title": ["T"], "genres": [[["Action"]]]})),
    ("items", "genres", pa.table({"item_id": ["1"], "title": ["T"],
                                  "genres": [{"name": "Action"}]})),
    ("users", "occupation", pa.table({"user_id": ["007"], "occupation": [{"a": 1}]})),
    ("interactions", "rating", pa.table({"user_id": ["007"], "item_id": ["1"],
                                         "timestamp": [881250949], "rating": [[5]]})),
])
def test_nested_values_are_refused_unless_the_column_is_a_list(tmp_path: Path, dataset: str,
                                                               column: str,
                                                               table: pa.Table) -> None:
    """Regression (issue 13): nested values were stringified ("['Action']")."""
    err = _error(_parquet_batch(tmp_path / "b", **{dataset: table}))
    assert (err.path.name, err.column, err.rule) == (f"{dataset}.parquet", column,
                                                     "nested_value")


def test_list_genres_stay_lists(tmp_path: Path) -> None:
    from ingest.normalize import normalize_batch

    table = pa.table({"item_id": ["1", "2", "3"], "title": ["a", "b", "c"],
                      "genres": pa.array([["Action"], ["Comedy", "Drama"], None],
                                         pa.large_list(pa.string()))})
    batch = normalize_batch(read_batch(_parquet_batch(tmp_path / "b", items=table)))
    assert [list(g) for g in batch.items["genres"]] == [["Action"], ["Comedy", "Drama"], []]


def test_whitespace_around_ids_is_trimmed(tmp_path: Path) -> None:
    """Regression (issue 13): "u0000001 " was published beside "u0000001" as another user.
    The rule: ids are trimmed when read (a documented normalisation)."""
    root = write_batch(tmp_path / "b", users='user_id\n" 007"\n008 \n009\n',
                       interactions="user_id,item_id,timestamp\n007 ,1 ,881250949\n")
    (root / "items.csv").unlink()
    pq.write_table(pa.table({"item_id": [" 1", "2\t", "3"], "title": ["a", "b", "c"]}),
                   root / "items.parquet")
    batch = read_batch(root)
    assert batch.users["user_id"].tolist() == ["007", "008", "009"]
    assert batch.items["item_id"].tolist() == ["1", "2", "3"]
    assert batch.interactions[["user_id", "item_id"]].values.tolist() == [["007", "1"]]
