import pandas as pd
import pytest

from recsys.errors import InputFileError
from recsys.movielens import import_movielens


def test_import_movielens(movielens_dir, tmp_path):
    batch = import_movielens(movielens_dir, tmp_path)
    assert (batch.users, batch.items, batch.interactions) == (943, 1682, 100_000)
    items = pd.read_csv(tmp_path / "items.csv", dtype={"item_id": str})
    toy_story = items.set_index("item_id").loc["1"]
    assert toy_story["title"] == "Toy Story (1995)"
    assert toy_story["genres"] == "Animation|Children's|Comedy"
    inter = pd.read_csv(tmp_path / "interactions.csv")
    assert list(inter.columns) == ["user_id", "item_id", "timestamp", "rating"]


def test_import_movielens_names_missing_file(tmp_path):
    with pytest.raises(InputFileError, match="u.user"):
        import_movielens(tmp_path, tmp_path / "out")
