"""Feature views defined as code: the one registry of what the offline store computes.

Each `FeatureView` names its entity and key columns, the SQL that computes it (in
`features/sql/<name>.sql`, reading the relations the builder registers: `raw_users`, `raw_items`,
`raw_interactions`, `item_genres` and the one-row `build_params`), its declared output columns
with types and descriptions, an owner and the default build parameters.

Builds run per user part (`features.parts`): a view of a user or a (user, item) pair is computed
whole inside the part that holds the user; a view of an item reads `partials` instead of
`raw_interactions` -- per-part aggregates (`features/sql/<partial>.sql`, over the part's
`raw_interactions`) that its SQL merges, so every part's events count once.

`FeatureView.version` is a hash of the definition: the SQL text, the entity and keys, the declared
column names and types and the default parameters. Changing what a view computes therefore
changes its version; editing a description or the owner does not (they document, they do not
compute). Views marked `passthrough` also carry the entity's own attribute columns (whatever the
input batch has, e.g. `age`, `title`), ahead of the declared ones.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from functools import cached_property
from importlib.resources import files
from typing import Any

TIMESTAMP = "TIMESTAMP WITH TIME ZONE"

#: Build parameters every view may read from `build_params` (the defaults; a build may override
#: `half_life_days` from settings and records the values it used in the manifest).
DEFAULT_PARAMS: dict[str, Any] = {
    "half_life_days": 0.0,  # recency decay of interaction weights; <= 0: off
    "recent_days": 30,  # window of the "recent" activity counts
    "top_genres": 5,  # length of a user's genre_affinity list
}


def _sql_text(name: str) -> str:
    return files("features").joinpath("sql", f"{name}.sql").read_text()


def partial_sql(name: str) -> str:
    """The SQL text of a per-part partial aggregate (`FeatureView.partials`)."""
    return _sql_text(name)


@dataclass(frozen=True, kw_only=True)
class Column:
    """One declared output column of a view."""

    name: str
    dtype: str
    description: str


@dataclass(frozen=True, kw_only=True)
class FeatureView:
    """A feature view: what it is about, how it is computed, what it yields.

    Attributes:
        name: view name; also the SQL file name and the snapshot folder.
        entity: "user", "item" or "user_item".
        keys: the columns that identify a row (unique within a snapshot).
        columns: the declared output columns (after the passthrough attributes, if any).
        owner: team or person to ask about the view.
        description: one line for `recsys features list`.
        passthrough: name of the relation whose attribute columns come first, or None.
        params: names of the `build_params` the SQL reads.
        partials: relations of per-part aggregates the SQL reads (item views), each computed by
            `features/sql/<partial>.sql` in every user part (`partial_sql`).
    """

    name: str
    entity: str
    keys: tuple[str, ...]
    columns: tuple[Column, ...]
    owner: str
    description: str
    passthrough: str | None = None
    params: tuple[str, ...] = field(default_factory=tuple)
    partials: tuple[str, ...] = field(default_factory=tuple)

    @cached_property
    def sql(self) -> str:
        """The view's SQL text."""
        return _sql_text(self.name)

    @property
    def per_user_part(self) -> bool:
        """Whether every row is computed inside the user part holding its user."""
        return self.entity in ("user", "user_item")

    @cached_property
    def version(self) -> str:
        """First 12 hex digits of the SHA-256 of the computing part of the definition."""
        definition = {
            "name": self.name,
            "entity": self.entity,
            "keys": list(self.keys),
            "sql": self.sql,
            "columns": [[c.name, c.dtype] for c in self.columns],
            "passthrough": self.passthrough,
            "params": {p: DEFAULT_PARAMS[p] for p in self.params},
            **({"partials": {name: partial_sql(name) for name in self.partials}}
               if self.partials else {}),
        }
        blob = json.dumps(definition, sort_keys=True).encode()
        return hashlib.sha256(blob).hexdigest()[:12]

    def column(self, name: str) -> Column:
        for col in self.columns:
            if col.name == name:
                return col
        raise KeyError(f"view {self.name} declares no column {name!r}")

    def describe(self) -> dict[str, Any]:
        """The definition as plain data (for the CLI and manifests)."""
        return {
            "name": self.name, "entity": self.entity, "keys": list(self.keys),
            "version": self.version, "owner": self.owner, "description": self.description,
            "passthrough": self.passthrough, "params": list(self.params),
            "partials": list(self.partials),
            "columns": [{"name": c.name, "type": c.dtype, "description": c.description}
                        for c in self.columns],
        }


_STATS_COLUMNS = (
    Column(name="mean_rating", dtype="FLOAT", description="mean explicit rating (null: none)"),
    Column(name="rating_std", dtype="FLOAT",
           description="sample standard deviation of ratings (null: fewer than two)"),
    Column(name="first_ts", dtype=TIMESTAMP, description="earliest event at or before as-of"),
    Column(name="last_ts", dtype=TIMESTAMP, description="latest event at or before as-of"),
)

INTERACTIONS = FeatureView(
    name="interactions",
    entity="user_item",
    keys=("user_id", "item_id"),
    owner="recsys-features",
    description="confidence weight per (user, item) pair, the model's training input",
    params=("half_life_days",),
    columns=(
        Column(name="user_id", dtype="VARCHAR", description="user id"),
        Column(name="item_id", dtype="VARCHAR", description="item id"),
        Column(name="weight", dtype="FLOAT",
               description="sum over events of (weight, else rating, else 1) x event-type "
                           "multiplier (purchase 3, like/add_to_cart 2) x recency decay"),
        Column(name="raw_weight", dtype="FLOAT", description="the same sum without the decay"),
        Column(name="n_events", dtype="INTEGER", description="events of the pair"),
        Column(name="mean_rating", dtype="FLOAT", description="mean rating of the pair"),
        Column(name="first_ts", dtype=TIMESTAMP, description="first event of the pair"),
        Column(name="last_ts", dtype=TIMESTAMP, description="last event of the pair"),
    ),
)

USER_FEATURES = FeatureView(
    name="user_features",
    entity="user",
    keys=("user_id",),
    owner="recsys-features",
    description="per-user activity counts, recency, rating statistics, genre affinity "
                "and recent items",
    passthrough="raw_users",
    params=("recent_days", "top_genres"),
    columns=(
        Column(name="n_interactions", dtype="INTEGER", description="events"),
        Column(name="n_items", dtype="INTEGER", description="distinct items"),
        Column(name="n_purchases", dtype="INTEGER", description="purchase events"),
        Column(name="n_likes", dtype="INTEGER", description="like and add_to_cart events"),
        Column(name="n_recent", dtype="INTEGER",
               description="events in the recent_days before as-of"),
        Column(name="active_days", dtype="INTEGER", description="distinct UTC days with events"),
        *_STATS_COLUMNS,
        Column(name="days_since_last", dtype="FLOAT",
               description="days from the last event to as-of (null: no events)"),
        Column(name="genre_affinity", dtype="STRUCT(genre VARCHAR, fraction FLOAT)[]",
               description="top genres by share of the user's genre-tagged events"),
        Column(name="recent_items", dtype=f"STRUCT(item_id VARCHAR, last_ts {TIMESTAMP})[]",
               description="the user's 20 latest distinct items by last event, newest first"),
    ),
)

ITEM_FEATURES = FeatureView(
    name="item_features",
    entity="item",
    keys=("item_id",),
    owner="recsys-features",
    description="per-item popularity, rating statistics, genres and age",
    passthrough="raw_items",
    params=("recent_days",),
    partials=("item_activity",),
    columns=(
        Column(name="n_interactions", dtype="INTEGER", description="events"),
        Column(name="n_users", dtype="INTEGER", description="distinct users (popularity)"),
        Column(name="n_recent_users", dtype="INTEGER",
               description="distinct users in the recent_days before as-of"),
        *_STATS_COLUMNS,
        Column(name="popularity_rank", dtype="INTEGER", description="rank by n_users (1 = top)"),
        Column(name="trending_rank", dtype="INTEGER",
               description="rank by n_recent_users (1 = top)"),
        Column(name="age_days", dtype="FLOAT",
               description="days from the item's first event to as-of"),
        Column(name="age_years", dtype="INTEGER",
               description="as-of year minus release_year (null: unknown)"),
    ),
)

#: The registry: every view the store builds, in build order.
REGISTRY: dict[str, FeatureView] = {v.name: v for v in (INTERACTIONS, USER_FEATURES,
                                                         ITEM_FEATURES)}


#: Every partial aggregate a view reads, in registry order.
PARTIALS: tuple[str, ...] = tuple(dict.fromkeys(p for v in REGISTRY.values() for p in v.partials))


def get_view(name: str) -> FeatureView:
    """The registered view `name` (KeyError naming the known views otherwise)."""
    try:
        return REGISTRY[name]
    except KeyError:
        raise KeyError(f"unknown feature view {name!r}; known: {sorted(REGISTRY)}") from None
