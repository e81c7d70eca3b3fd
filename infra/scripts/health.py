"""Health check of a deployment: MongoDB, the active serving version, disk, API and Prefect.

Each check is independent and reports `ok`, a short `detail` and how long it took; the report is
healthy when every check passed. Optional checks (the API, the Prefect server) run only when a
URL is given.

CLI (exit status 0 when healthy, 1 otherwise; JSON on stdout)::

    python -m infra.scripts.health [--api-url http://127.0.0.1:8000]
                                   [--prefect-url http://127.0.0.1:4200/api] [--min-free-gb 1]
"""

from __future__ import annotations

import argparse
import json
import logging
import shutil
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import httpx
from pymongo import MongoClient

from recsys.settings import Settings

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
    from serving.store import STATE, VERSIONS, version_collections

    with MongoClient(settings.mongodb_uri, serverSelectionTimeoutMS=settings.mongodb_timeout_ms,
                     connectTimeoutMS=settings.mongodb_timeout_ms) as client:
        client.admin.command("ping")
        db = client[settings.mongodb_db]
        state = db[STATE].find_one({"_id": "active"})
        if not state:
            raise RuntimeError(f"no active model version in database {settings.mongodb_db}")
        version = state["version"]
        doc = db[VERSIONS].find_one({"_id": version}, {"status": 1})
        if not doc or doc.get("status") != "ready":
            raise RuntimeError(f"active version {version} is not 'ready' ({doc})")
        present = set(db.list_collection_names())
        missing = [name for name in version_collections(version) if name not in present]
        if missing:
            raise RuntimeError(f"active version {version} lacks collections {missing}")
        users = db[f"recs_{version}"].estimated_document_count()
    return f"active version {version}, {users} users with recommendations"


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


def main(argv: list[str] | None = None) -> int:
    """CLI entry point; see the module docstring."""
    parser = argparse.ArgumentParser(prog="python -m infra.scripts.health",
                                     description="Check MongoDB, serving, disk, API, Prefect.")
    parser.add_argument("--api-url", help="serving API base URL")
    parser.add_argument("--prefect-url", help="Prefect API URL, e.g. http://127.0.0.1:4200/api")
    parser.add_argument("--min-free-gb", type=float, default=1.0)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    report = check_health(Settings(), api_url=args.api_url, prefect_url=args.prefect_url,
                          min_free_gb=args.min_free_gb)
    print(json.dumps(report.to_dict(), indent=2))
    return 0 if report.ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
