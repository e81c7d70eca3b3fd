"""Synthetic batches in the input format, with the skew of real interaction logs.

* item popularity follows a power law (a few blockbusters, a long tail);
* user activity is log-normal (most users do little, a few do a lot);
* each user prefers one or two of a handful of genres, so there is real structure to learn;
* ratings are higher inside a user's preferred genres; timestamps span a year.

Everything is vectorised numpy and deterministic for a seed; interactions are written in chunks so
tens of millions of rows never sit in memory as Python objects.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Literal

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

log = logging.getLogger(__name__)

GENRES = np.array(["Action", "Comedy", "Drama", "Documentary", "Horror", "Romance", "Sci-Fi",
                   "Thriller"])
OCCUPATIONS = np.array(["student", "engineer", "artist", "teacher", "doctor", "writer",
                        "retired", "sales", "other"])
EVENT_TYPES = np.array(["view", "like", "purchase"])
EVENT_PROBABILITIES = np.array([0.7, 0.2, 0.1])
TITLE_WORDS = np.array(["Red", "Silent", "Last", "Hidden", "Broken", "Golden", "Lost", "Wild",
                        "Dark", "Bright", "River", "Empire", "Garden", "Machine", "Voyage",
                        "Harbor", "Signal", "Winter", "Dream", "Circuit"])
DEFAULT_END = datetime(2026, 1, 1, tzinfo=UTC)
SECONDS_PER_YEAR = 365 * 24 * 3600

Format = Literal["csv", "parquet"]


@dataclass(frozen=True)
class GeneratedBatch:
    directory: Path
    users: int
    items: int
    interactions: int


def _write_table(table: pa.Table, path: Path, fmt: Format) -> None:
    if fmt == "parquet":
        pq.write_table(table, path)
    else:
        pacsv.write_csv(table, path)


def _genre_column(genre_sets: list[np.ndarray], fmt: Format) -> pa.Array:
    if fmt == "parquet":
        return pa.array([list(GENRES[g]) for g in genre_sets], type=pa.list_(pa.string()))
    return pa.array(["|".join(GENRES[g]) for g in genre_sets], type=pa.string())


def generate_batch(out_dir: Path, *, users: int, items: int, interactions: int, seed: int = 42,
                   fmt: Format = "parquet", end: datetime = DEFAULT_END,
                   chunk_size: int = 2_000_000) -> GeneratedBatch:
    """Write `users`, `items` and `interactions` files for one synthetic batch into `out_dir`."""
    if users < 1 or items < 2:
        raise ValueError("need at least 1 user and 2 items")
    if interactions < users:
        raise ValueError(f"need at least one interaction per user ({interactions} < {users})")
    out_dir.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    n_genres = len(GENRES)
    ext = "parquet" if fmt == "parquet" else "csv"

    user_ids = np.char.add("u", np.char.zfill(np.arange(1, users + 1).astype(str), 7))
    item_ids = np.char.add("i", np.char.zfill(np.arange(1, items + 1).astype(str), 6))

    # Users: demographics plus a genre taste concentrated on one or two genres.
    taste = rng.dirichlet(np.full(n_genres, 0.3), size=users).astype(np.float32)
    users_table = pa.table({
        "user_id": user_ids,
        "age": rng.integers(16, 75, size=users),
        "gender": rng.choice(np.array(["F", "M"]), size=users),
        "occupation": rng.choice(OCCUPATIONS, size=users),
        "zip": np.char.zfill(rng.integers(0, 99999, size=users).astype(str), 5),
    })
    _write_table(users_table, out_dir / f"users.{ext}", fmt)

    # Items: a primary genre (some genres are bigger), up to two extra genres, power-law popularity.
    genre_weights = rng.dirichlet(np.full(n_genres, 2.0))
    primary = rng.choice(n_genres, size=items, p=genre_weights)
    extra = rng.integers(0, n_genres, size=(items, 2))
    n_extra = rng.choice(3, size=items, p=[0.5, 0.35, 0.15])
    genre_sets = [np.unique(np.concatenate(([p], e[:k]))) for p, e, k in
                  zip(primary, extra, n_extra, strict=True)]
    popularity = 1.0 / np.arange(1, items + 1) ** 0.9
    popularity = popularity[rng.permutation(items)]
    titles = np.char.add(np.char.add(rng.choice(TITLE_WORDS, size=items), " "),
                         rng.choice(TITLE_WORDS, size=items))
    titles = np.char.add(np.char.add(titles, " "), np.arange(1, items + 1).astype(str))
    items_table = pa.table({
        "item_id": item_ids,
        "title": titles,
        "genres": _genre_column(genre_sets, fmt),
        "release_year": rng.integers(1950, 2026, size=items),
    })
    _write_table(items_table, out_dir / f"items.{ext}", fmt)

    # Per-genre sampling tables: items of genre g and their cumulative popularity.
    genre_items = [np.flatnonzero(primary == g) for g in range(n_genres)]
    genre_cdf = [np.cumsum(popularity[idx]) / popularity[idx].sum() if len(idx) else None
                 for idx in genre_items]
    fallback_cdf = np.cumsum(popularity) / popularity.sum()

    # Activity per user: log-normal weights; everyone has at least one interaction.
    activity = rng.lognormal(mean=0.0, sigma=1.0, size=users)
    counts = 1 + rng.multinomial(interactions - users, activity / activity.sum())
    user_of_row = np.repeat(np.arange(users, dtype=np.int64), counts)
    end_ts = int(end.timestamp())

    path = out_dir / f"interactions.{ext}"
    writer: pq.ParquetWriter | pacsv.CSVWriter | None = None
    written = 0
    try:
        for start in range(0, interactions, chunk_size):
            rows = user_of_row[start:start + chunk_size]
            n = len(rows)
            # Genre per event from the user's taste (inverse CDF), then an item of that genre.
            cdf = np.cumsum(taste[rows], axis=1)
            genre = np.minimum((cdf < rng.random(n, dtype=np.float32)[:, None]).sum(axis=1),
                               n_genres - 1)
            item = np.empty(n, dtype=np.int64)
            draws = rng.random(n)
            for g in range(n_genres):
                mask = genre == g
                if not mask.any():
                    continue
                if genre_cdf[g] is None:
                    item[mask] = np.minimum(np.searchsorted(fallback_cdf, draws[mask]), items - 1)
                else:
                    pos = np.minimum(np.searchsorted(genre_cdf[g], draws[mask]),
                                     len(genre_items[g]) - 1)
                    item[mask] = genre_items[g][pos]
            affinity = taste[rows, primary[item]]
            rating = np.clip(np.rint(2.5 + 4.0 * affinity + rng.normal(0, 0.8, n)), 1, 5)
            timestamp = end_ts - (rng.random(n) ** 0.7 * SECONDS_PER_YEAR).astype(np.int64)
            table = pa.table({
                "user_id": user_ids[rows],
                "item_id": item_ids[item],
                "timestamp": timestamp,
                "rating": rating.astype(np.float64),
                "event_type": EVENT_TYPES[rng.choice(3, size=n, p=EVENT_PROBABILITIES)],
            })
            if writer is None:
                writer = (pq.ParquetWriter(path, table.schema) if fmt == "parquet"
                          else pacsv.CSVWriter(path, table.schema))
            writer.write_table(table)
            written += n
    finally:
        if writer is not None:
            writer.close()
    log.info("generated %d users, %d items, %d interactions in %s", users, items, written, out_dir)
    return GeneratedBatch(directory=out_dir, users=users, items=items, interactions=written)
