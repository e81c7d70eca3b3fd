"""Convert MovieLens 100K (`u.user`, `u.item`, `u.data`) into the project's input format.

The dataset's licence allows redistribution only under its own terms, so the project never ships
it: this reads a local copy (e.g. `../shared/datasets/ml-100k`) and writes a batch directory.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from recsys.errors import InputFileError

log = logging.getLogger(__name__)

# u.item's 19 genre flags, in file order (u.genre lists the same names with their indices).
GENRES = ["unknown", "Action", "Adventure", "Animation", "Children's", "Comedy", "Crime",
          "Documentary", "Drama", "Fantasy", "Film-Noir", "Horror", "Musical", "Mystery",
          "Romance", "Sci-Fi", "Thriller", "War", "Western"]


@dataclass(frozen=True)
class ImportedBatch:
    directory: Path
    users: int
    items: int
    interactions: int


def _read(path: Path, sep: str, names: list[str], encoding: str = "utf-8") -> pd.DataFrame:
    if not path.exists():
        raise InputFileError(path, "MovieLens file not found", rule="file_exists")
    return pd.read_csv(path, sep=sep, names=names, header=None, dtype=str, encoding=encoding,
                       keep_default_na=False)


def import_movielens(src_dir: Path, out_dir: Path) -> ImportedBatch:
    """Write `users.csv`, `items.csv` and `interactions.csv` for MovieLens 100K into `out_dir`."""
    users = _read(src_dir / "u.user", "|", ["user_id", "age", "gender", "occupation", "zip"])
    item_cols = ["item_id", "title", "release_date", "video_release_date", "imdb_url", *GENRES]
    items = _read(src_dir / "u.item", "|", item_cols, encoding="latin-1")
    ratings = _read(src_dir / "u.data", "\t", ["user_id", "item_id", "rating", "timestamp"])

    flags = items[GENRES].astype(int).to_numpy().astype(bool)
    genre_names = pd.Series(GENRES)
    items = items.assign(
        genres=["|".join(genre_names[row]) for row in flags],
        release_year=pd.to_datetime(items["release_date"], format="%d-%b-%Y",
                                    errors="coerce").dt.year.astype("Int64"),
    )[["item_id", "title", "genres", "release_year", "imdb_url"]]

    out_dir.mkdir(parents=True, exist_ok=True)
    users.to_csv(out_dir / "users.csv", index=False)
    items.to_csv(out_dir / "items.csv", index=False)
    ratings[["user_id", "item_id", "timestamp", "rating"]].to_csv(
        out_dir / "interactions.csv", index=False)
    log.info("imported MovieLens: %d users, %d items, %d ratings", len(users), len(items),
             len(ratings))
    return ImportedBatch(directory=out_dir, users=len(users), items=len(items),
                         interactions=len(ratings))
