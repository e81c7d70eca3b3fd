"""The one settings object, read from the environment (and an optional `.env`).

Nothing else in the project reads `os.environ`: entry points call `load_settings()` once and pass
the result down. Unknown keys are refused, so a misspelt `RECSYS_TOPN=5` in the environment or in
`.env` stops the program with a one-line message instead of being silently ignored; `.env` keys
without the `RECSYS_` prefix (other tools' settings) are left alone.
"""

from __future__ import annotations

import difflib
import os
from functools import cached_property
from pathlib import Path
from typing import Any, Literal

from pydantic import AliasChoices, BaseModel, ConfigDict, Field, ValidationError
from pydantic.fields import FieldInfo
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
)

from recsys.errors import SettingsError

ENV_PREFIX = "RECSYS_"


class DatasetContract(BaseModel):
    """How validation treats one dataset (``users``, ``items`` or ``interactions``).

    Attributes:
        policy: ``fail`` rejects the whole batch on any failed expectation; ``drop`` removes the
            rows that fail a row-level expectation (kept aside under ``validation/<run id>/``)
            and rejects the batch only above `max_invalid_fraction` or on a table-level failure.
        max_invalid_fraction: with ``drop``, the largest share of rows that may be dropped.
        min_rows / max_rows: row-count bounds (``max_rows`` None: unbounded).
        extra_columns: ``reject`` reports columns outside the contract as schema drift;
            ``allow`` accepts them (attributes of users and items, by default).
    """

    model_config = ConfigDict(extra="forbid")

    policy: Literal["fail", "drop"] = "fail"
    max_invalid_fraction: float = Field(0.0, ge=0, le=1)
    min_rows: int = Field(1, ge=0)
    max_rows: int | None = Field(None, ge=1)
    extra_columns: Literal["reject", "allow"] = "reject"


def _default_contracts() -> dict[str, DatasetContract]:
    return {"users": DatasetContract(extra_columns="allow"),
            "items": DatasetContract(extra_columns="allow"),
            "interactions": DatasetContract()}


class Settings(BaseSettings):
    """Configuration for the pipeline, the CLI and the API.

    `MONGODB_URI`, `MONGODB_DB` and `RECSYS_DATA_DIR` are the names users set; every other field
    reads `RECSYS_<FIELD>` (for example `RECSYS_TOP_N=100`).
    """

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX, env_file=".env", extra="forbid", populate_by_name=True
    )

    mongodb_uri: str = Field(
        "mongodb://127.0.0.1:27017",
        validation_alias=AliasChoices("MONGODB_URI", "mongodb_uri"),
    )
    mongodb_db: str = Field("recsys", validation_alias=AliasChoices("MONGODB_DB", "mongodb_db"))
    data_dir: Path = Field(
        Path("data"), validation_alias=AliasChoices("RECSYS_DATA_DIR", "data_dir")
    )
    mongodb_timeout_ms: int = Field(5000, ge=100)
    mongodb_max_pool_size: int = Field(100, ge=1)
    mongo_start_timeout_s: float = Field(
        300.0, gt=0, description="how long `recsys mongo start` waits for the embedded server; "
        "it replays its journal first, minutes for tens of GB")

    # Publishing
    top_n: int = Field(50, ge=1, le=1000, description="recommendations stored per user")
    similar_n: int = Field(20, ge=1, le=1000, description="similar items stored per item")
    popular_n: int = Field(100, ge=1, le=10000, description="length of the popular-items list")
    keep_versions: int = Field(
        3, ge=2, description="published versions kept in MongoDB (at least 2: the one just "
        "replaced stays while API workers still follow the old pointer, and for rollback)")
    publish_batch_size: int = Field(5000, ge=1)
    publish_lock_ttl_s: float = Field(
        60.0, ge=1, description="lease of the publish lock: a holder renews it every third of "
        "this; a crashed holder's lock is taken over this long after its last renewal")
    publish_lock_timeout_s: float = Field(
        3600.0, ge=0, description="how long a publish waits for another one before failing")

    # Feature store (features/)
    feature_half_life_days: float = Field(
        0.0, ge=0, description="recency decay of interaction weights in days; 0 = off")
    feature_keep_snapshots: int = Field(
        10, ge=1, description="feature snapshots kept (plus any a published model references)")
    feature_online_keep: int = Field(
        2, ge=1, description="materialized online feature snapshots kept in MongoDB")

    # Model
    keep_models: int = Field(
        5, ge=1, description="model versions kept under models/ (plus any MongoDB still lists)")
    # Defaults chosen by training/search.py on MovieLens 100K (ratings as confidence).
    factors: int = Field(32, ge=1)
    regularization: float = Field(50.0, ge=0)
    alpha: float = Field(2.0, gt=0)
    iterations: int = Field(15, ge=1)
    refit_iterations: int = Field(
        3, ge=1, description="ALS sweeps of the fit on all data, warm-started from the holdout "
        "model's factors (at most `iterations`)")
    seed: int = 42
    als_device: Literal["cpu", "gpu", "auto"] = Field(
        "cpu", description="where ALS is fitted: `cpu` (implicit's CPU model), `gpu` (implicit's "
        "CUDA model; fails when implicit has no CUDA build or no GPU is visible, never falls back "
        "to the CPU) or `auto` (the GPU when `implicit.gpu.HAS_CUDA`, else the CPU)")
    weighting: Literal["raw", "log1p", "bm25", "binary"] = Field(
        "raw", description="confidence weighting of interaction weights before alpha")
    search: bool = Field(False, description="choose ALS hyperparameters by search on each run")
    search_space_file: Path | None = Field(None, description="JSON search space; None = default")
    search_objective: Literal["precision", "recall", "ndcg", "map"] = "ndcg"
    search_max_trials: int | None = Field(None, ge=1)
    explain_n: int = Field(3, ge=0, le=20, description="past items explaining each rec; 0 = off")
    score_backend: Literal["cpu", "gpu"] = Field(
        "cpu", description="top-N scoring of all users: implicit on the CPU, or torch on a "
        "CUDA GPU (needs the `gpu` extra; fails when CUDA is missing)")

    # Evaluation
    eval_k: int = Field(10, ge=1)
    holdout_fraction: float = Field(0.25, gt=0, lt=1)
    holdout_split: Literal["random", "time"] = Field(
        "random", description="which of each user's pairs the holdout takes: `random` (a seeded "
        "random share) or `time` (the latest share by the pair's last event; needs `last_ts` in "
        "the interactions snapshot)")
    eval_max_users: int | None = Field(
        100_000, ge=1, description="score a seeded sample of this many users in evaluation and "
        "the gate (None: all users)")
    # Champion/challenger: publish only if challenger > champion + margin on this metric at eval_k
    gate_metric: Literal["precision", "recall", "ndcg", "map"] = "ndcg"
    gate_margin: float = Field(0.0, ge=0, description="absolute margin the challenger must beat")

    # API
    api_host: str = "127.0.0.1"
    api_port: int = 8000
    api_public_url: str | None = Field(
        None, pattern=r"^https?://[^\s/?#]+(/[^\s?#]*)?$",
        description="the API's address as browsers reach it, for links such as the Data Docs "
        "artifact (RECSYS_API_PUBLIC_URL); default http://<api_host>:<api_port>")
    active_poll_seconds: float = Field(0.5, gt=0)

    # Operations
    pushgateway_url: str | None = Field(
        None, description="Prometheus Pushgateway for pipeline run outcomes (RECSYS_PUSHGATEWAY_URL)"
    )
    api_keys: str = Field("", description="comma-separated X-API-Key values; empty = no auth")
    admin_api_keys: str = Field("", description="comma-separated admin keys; empty = no admin")
    api_rate_limit_per_second: float = Field(
        0.0, ge=0, description="requests/s per API key (per client IP when no keys are "
        "configured); 0 = off (the default)")
    api_rate_limit_burst: int = Field(2000, ge=1)
    api_max_body_bytes: int = Field(262_144, ge=1024)
    api_batch_max_users: int = Field(1000, ge=1, le=10_000)
    api_cache_entries: int = Field(10_000, ge=0, description="cached documents; 0 = no cache")
    api_read_timeout_ms: int = Field(1500, ge=50, description="MongoDB read deadline per request")
    api_retry_after_seconds: int = Field(2, ge=1)
    api_log_json: bool = True
    api_access_log: bool = Field(False, description="one log line per request "
                                 "(RECSYS_API_ACCESS_LOG); off by default: it costs throughput")
    project_dir: Path | None = Field(
        None, description="the checkout a Prefect worker runs the flows from; read by "
        "prefect.yaml's pull step when deploying (RECSYS_PROJECT_DIR)")

    # Data contracts (ingest/validate.py; bounds feed the suites' $PARAMETERs)
    # RECSYS_CONTRACTS is JSON, e.g. '{"interactions": {"policy": "drop",
    # "max_invalid_fraction": 0.01}}'; datasets left out keep their defaults.
    contracts: dict[Literal["users", "items", "interactions"], DatasetContract] = Field(
        default_factory=_default_contracts)
    rating_min: float = 0.0
    rating_max: float = 10.0
    age_min: int = 0
    age_max: int = 120
    max_duplicate_interaction_fraction: float = Field(
        0.01, ge=0, le=1, description="share of rows repeating a (user, item, timestamp)")
    future_timestamp_tolerance_s: float = Field(
        300.0, ge=0, description="interactions may be this far ahead of the clock (clock skew)")
    validation_data_docs: bool = Field(
        True, description="build GE Data Docs under validation/<run id>/data-docs each run")
    validation_engine: Literal["pandas", "duckdb"] = Field(
        "pandas", description="where GE computes the expectations: its pandas engine, or its "
        "SQL engine on DuckDB (RECSYS_VALIDATION_ENGINE)")
    validate_chunk_rows: int = Field(
        1_000_000, ge=1, description="an interactions file of more rows is validated and "
        "written chunk by chunk, this many rows at a time (RECSYS_VALIDATE_CHUNK_ROWS)")
    max_line_bytes: int = Field(
        1024 * 1024, ge=1024, description="longest CSV line, and longest parquet text value, "
        "a batch may hold; longer is refused before parsing (RECSYS_MAX_LINE_BYTES)")

    # Where the partitioned stages run (flows/runner.py, docs/scaling.md)
    task_runner: Literal["local", "dask"] = Field(
        "local", description="local: every stage in the flow's process (one partition); dask: "
        "the partitioned stages run on a Dask cluster through prefect-dask")
    dask_address: str | None = Field(
        None, description="scheduler of an existing Dask cluster (tcp://scheduler:8786); "
        "None with RECSYS_TASK_RUNNER=dask: a LocalCluster is started for the run")
    dask_workers: int = Field(2, ge=1, le=256,
                              description="worker processes of the run's LocalCluster")
    dask_connect_timeout_s: float = Field(
        10.0, gt=0, le=600, description="how long a run waits for the Dask scheduler, then for "
        "its first worker, before it fails (DaskClusterError) with nothing written")
    partitions: int | None = Field(
        None, ge=1, le=4096, description="user partitions of the partitioned stages (stable "
        "hash of the user id); None: 1 with the local runner, 2 x dask_workers with dask; set it to 2-4 x the workers of an "
        "existing cluster")

    @property
    def partition_count(self) -> int:
        """How many user partitions the partitioned stages use (see `partitions`)."""
        if self.partitions is not None:
            return self.partitions
        return 1 if self.task_runner == "local" else 2 * self.dask_workers

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return (init_settings, env_settings, _OwnDotEnvKeys(settings_cls, dotenv_settings),
                _UnknownEnvironmentKeys(settings_cls), file_secret_settings)

    def contract(self, dataset: str) -> DatasetContract:
        """The contract settings of `dataset`, defaults filled in."""
        return self.contracts.get(dataset) or _default_contracts()[dataset]  # type: ignore[index]

    @property
    def features_dir(self) -> Path:
        return self.data_dir / "features"

    @property
    def store_dir(self) -> Path:
        """The raw store (`ingest.raw_store`): every validated batch, once, by event date."""
        return self.data_dir / "store"

    @property
    def models_dir(self) -> Path:
        return self.data_dir / "models"

    @property
    def quarantine_dir(self) -> Path:
        return self.data_dir / "quarantine"

    @property
    def validation_dir(self) -> Path:
        """Per-run validation output: reports, Data Docs, dropped rows."""
        return self.data_dir / "validation"

    @property
    def mongo_dir(self) -> Path:
        return self.data_dir / "mongo"

    @property
    def runs_dir(self) -> Path:
        return self.data_dir / "runs"

    @cached_property
    def expectations_dir(self) -> Path:
        return Path(__file__).resolve().parent.parent / "expectations"


def known_environment_names() -> set[str]:
    """Every environment variable name `Settings` reads (upper case)."""
    names = set()
    for name, info in Settings.model_fields.items():
        alias = info.validation_alias
        if isinstance(alias, AliasChoices):
            names.update(str(choice).upper() for choice in alias.choices if str(choice).isupper())
        else:
            names.add(f"{ENV_PREFIX}{name}".upper())
    return names


class _OwnDotEnvKeys(PydanticBaseSettingsSource):
    """The `.env` source, minus keys that belong to other tools (no `RECSYS_` prefix)."""

    def __init__(self, settings_cls: type[BaseSettings], inner: PydanticBaseSettingsSource):
        super().__init__(settings_cls)
        self._inner = inner

    def get_field_value(self, field: FieldInfo, field_name: str) -> tuple[Any, str, bool]:
        return None, field_name, False

    def __call__(self) -> dict[str, Any]:
        known = {name.lower() for name in known_environment_names()} | set(
            self.settings_cls.model_fields)
        return {key: value for key, value in self._inner().items()
                if key.lower() in known or key.upper().startswith(ENV_PREFIX)}


class _UnknownEnvironmentKeys(PydanticBaseSettingsSource):
    """`RECSYS_*` environment variables that name no setting, passed on so they are refused."""

    def get_field_value(self, field: FieldInfo, field_name: str) -> tuple[Any, str, bool]:
        return None, field_name, False

    def __call__(self) -> dict[str, Any]:
        known = known_environment_names()
        return {key.lower(): value for key, value in os.environ.items()
                if key.upper().startswith(ENV_PREFIX) and key.upper() not in known}


def _variable(loc: tuple[Any, ...]) -> str:
    """The environment variable a validation error location refers to."""
    head = str(loc[0]) if loc else "?"
    info = Settings.model_fields.get(head)
    if info is not None and isinstance(info.validation_alias, AliasChoices):
        return str(info.validation_alias.choices[0])
    name = head.upper()
    name = name if name.startswith(ENV_PREFIX) else f"{ENV_PREFIX}{name}"
    return name + "".join(f".{part}" for part in loc[1:])


def describe_settings_error(error: ValidationError) -> str:
    """One line naming each wrong variable, its value and why it is wrong."""
    known = sorted(known_environment_names())
    parts = []
    for item in error.errors():
        name = _variable(tuple(item.get("loc", ())))
        if item.get("type") == "extra_forbidden":
            close = difflib.get_close_matches(name.upper(), known, n=1)
            hint = f" (did you mean {close[0]}?)" if close else ""
            parts.append(f"{name.upper()} is not a setting{hint}")
        else:
            value = str(item.get("input"))
            value = value if len(value) <= 80 else value[:77] + "..."
            parts.append(f"{name}={value!s}: {item.get('msg', 'invalid')}")
    return "invalid settings: " + "; ".join(parts)


def load_settings(**overrides: Any) -> Settings:
    """Read the settings once at an entry point; a wrong value is a one-line `SettingsError`."""
    try:
        return Settings(**overrides)
    except ValidationError as error:
        raise SettingsError(describe_settings_error(error)) from None
