"""The one settings object, read from the environment (and an optional `.env`).

Nothing else in the project reads `os.environ`: entry points build a `Settings` and pass it down.
"""

from __future__ import annotations

from functools import cached_property
from pathlib import Path

from pydantic import AliasChoices, Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    """Configuration for the pipeline, the CLI and the API.

    `MONGODB_URI`, `MONGODB_DB` and `RECSYS_DATA_DIR` are the names users set; every other field
    reads `RECSYS_<FIELD>` (for example `RECSYS_TOP_N=100`).
    """

    model_config = SettingsConfigDict(
        env_prefix="RECSYS_", env_file=".env", extra="ignore", populate_by_name=True
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

    # Publishing
    top_n: int = Field(50, ge=1, le=1000, description="recommendations stored per user")
    similar_n: int = Field(20, ge=1, le=1000, description="similar items stored per item")
    popular_n: int = Field(100, ge=1, le=10000, description="length of the popular-items list")
    keep_versions: int = Field(3, ge=1, description="published versions kept in MongoDB")
    publish_batch_size: int = Field(5000, ge=1)

    # Model
    # Defaults chosen on a validation split of MovieLens 100K (ratings as confidence).
    factors: int = Field(32, ge=1)
    regularization: float = Field(20.0, ge=0)
    alpha: float = Field(0.5, gt=0)
    iterations: int = Field(15, ge=1)
    seed: int = 42

    # Evaluation
    eval_k: int = Field(10, ge=1)
    holdout_fraction: float = Field(0.25, gt=0, lt=1)

    # API
    api_host: str = "127.0.0.1"
    api_port: int = 8000
    active_poll_seconds: float = Field(0.5, gt=0)

    @property
    def raw_dir(self) -> Path:
        return self.data_dir / "raw"

    @property
    def features_dir(self) -> Path:
        return self.data_dir / "features"

    @property
    def models_dir(self) -> Path:
        return self.data_dir / "models"

    @property
    def quarantine_dir(self) -> Path:
        return self.data_dir / "quarantine"

    @property
    def mongo_dir(self) -> Path:
        return self.data_dir / "mongo"

    @property
    def runs_dir(self) -> Path:
        return self.data_dir / "runs"

    @cached_property
    def expectations_dir(self) -> Path:
        return Path(__file__).resolve().parent.parent / "expectations"
