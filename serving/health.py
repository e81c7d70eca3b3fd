"""Health check of a deployment: MongoDB, the active serving version, disk, API and Prefect.

Each check is independent and reports `ok`, a short `detail` and how long it took; the report is
healthy when every check passed. Optional checks (the API, the Prefect server) run only when a
URL is given.

At the terminal: `recsys ops health [--api-url URL] [--prefect-url URL] [--min-free-gb N]`
(JSON on stdout; exit status 0 when healthy, 1 otherwise). The maintenance flow runs it too.
"""

from __future__ import annotations

import logging
import shutil
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import httpx

from recsys.settings import Settings
from serving.store import open_store

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Check:
    """One check's outcome."""

    name: str
    ok: bool
    detail: str
    seconds: float


@dataclass(frozen=True)
class HealthReport:
    """All checks; `ok` when every one passed."""

    checks: list[Check] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """True when every check passed."""
        return all(check.ok for check in self.checks)

    @property
    def failed(self) -> list[Check]:
        """The checks that did not pass."""
        return [check for check in self.checks if not check.ok]

    def to_dict(self) -> dict[str, object]:
        """JSON-friendly form."""
        return {"ok": self.ok, "checks": [asdict(check) for check in self.checks]}


def _timed(name: str, fn: Callable[[], str]) -> Check:
    started = time.perf_counter()
    try:
        detail = fn()
        ok = True
    except Exception as error:  # noqa: BLE001 - a failed check is a result, not a crash
        detail, ok = f"{type(error).__name__}: {error}", False
    return Check(name=name, ok=ok, detail=detail, seconds=round(time.perf_counter() - started, 3))


def check_mongo(settings: Settings) -> str:
    """MongoDB answers `ping`, and the active version is `ready` with its collections present."""
    with open_store(settings) as store:
        store.db.client.admin.command("ping")
        active = store.verify_active()
    return f"active version {active['version']}, {active['users']} users with recommendations"


def check_disk(path: Path, min_free_gb: float) -> str:
    """At least `min_free_gb` free on the file system holding `path`."""
    path = Path(path)
    probe = path if path.exists() else next((p for p in path.parents if p.exists()), Path("/"))
    free_gb = shutil.disk_usage(probe).free / 1e9
    if free_gb < min_free_gb:
        raise RuntimeError(f"{free_gb:.1f} GB free under {probe}, below {min_free_gb} GB")
    return f"{free_gb:.1f} GB free under {probe}"


def check_http(url: str, timeout: float = 5.0) -> str:
    """`url` answers 2xx."""
    response = httpx.get(url, timeout=timeout)
    response.raise_for_status()
    return f"{url}: {response.status_code}"


def check_health(settings: Settings, *, api_url: str | None = None,
                 prefect_url: str | None = None, min_free_gb: float = 1.0) -> HealthReport:
    """Run every applicable check and log the failed ones.

    Args:
        settings: MongoDB and data dir to check.
        api_url: base URL of the serving API; checks `/health` and `/ready` when given.
        prefect_url: Prefect API URL (ends in `/api`); checks `/health` when given.
        min_free_gb: free space required under the data dir.
    """
    checks = [
        _timed("mongodb", lambda: check_mongo(settings)),
        _timed("disk", lambda: check_disk(Path(settings.data_dir), min_free_gb)),
    ]
    if api_url:
        base = api_url.rstrip("/")
        checks.append(_timed("api-health", lambda: check_http(f"{base}/health")))
        checks.append(_timed("api-ready", lambda: check_http(f"{base}/ready")))
    if prefect_url:
        checks.append(_timed("prefect", lambda: check_http(f"{prefect_url.rstrip('/')}/health")))
    report = HealthReport(checks=checks)
    for check in report.failed:
        log.warning("health check %s failed: %s", check.name, check.detail)
    return report
