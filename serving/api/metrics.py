"""Prometheus metrics of the API: one process, or every worker of `recsys serve --workers N`.

With one worker each app has its own registry (so several apps can coexist in one process).
With several, `recsys serve` points prometheus-client's multiprocess mode at a fresh folder
(`PROMETHEUS_MULTIPROC_DIR`, set before the workers start, so every metric a worker creates
writes its values there) and `/metrics` sums what all workers wrote.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.metrics_core import Metric
from prometheus_client.multiprocess import MultiProcessCollector, mark_process_dead

LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
"""prometheus-client's own switch: it picks file-backed values at import when this is set."""

ACTIVE_VERSION_METRIC = "recsys_active_model_version_info"


def multiprocess_dir() -> Path | None:
    """The folder of multiprocess mode, when this process runs in it (the library reads the
    same variable; nothing else in the project does)."""
    value = os.environ.get(MULTIPROC_ENV)
    return Path(value) if value else None


def fresh_multiprocess_dir(root: Path) -> Path:
    """A new, empty folder for one `recsys serve` start, under `root`.

    Folders of earlier starts whose server process is gone are removed; a running server's
    folder (another port on the same data dir) is left alone. The caller removes its own
    folder when the server stops.
    """
    root.mkdir(parents=True, exist_ok=True)
    for old in root.iterdir():
        if old.is_dir() and not _alive(old.name):
            shutil.rmtree(old, ignore_errors=True)
    folder = root / str(os.getpid())
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir()
    return folder


def _alive(name: str) -> bool:
    if not name.isdigit():
        return False
    try:
        os.kill(int(name), 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process: not ours to clean
        return True
    return True


class _WorkersCollector:
    """Every worker's values, summed by prometheus-client; the active-version gauge drops the
    versions no live worker serves (0), as one process does by removing the label."""

    def __init__(self, path: Path) -> None:
        self._inner = MultiProcessCollector(None, str(path))

    def collect(self) -> Iterator[Metric]:
        for metric in self._inner.collect():
            if metric.name == ACTIVE_VERSION_METRIC:
                metric.samples = [s for s in metric.samples if s.value]
            yield metric


class ApiMetrics:
    """The API's metrics, exposed at `/metrics` (summed over the workers in multiprocess mode).

    - ``recsys_http_requests_total{method,route,status}``
    - ``recsys_http_request_duration_seconds{method,route,status}`` (histogram)
    - ``recsys_cache_requests_total{result="hit"|"miss"}``; hit ratio =
      ``rate(...{result="hit"}) / rate(recsys_cache_requests_total)``
    - ``recsys_cache_entries`` (summed over live workers)
    - ``recsys_active_model_version_info{version}`` (1 for each version a live worker serves)
    - ``recsys_mongodb_errors_total{kind}`` (``unavailable``, ``fail_fast``, ``error``)
    - ``recsys_rate_limited_total``

    Args:
        multiprocess_path: the folder of multiprocess mode (`multiprocess_dir()`), or None for
            one process.
    """

    def __init__(self, multiprocess_path: Path | None = None) -> None:
        self.multiprocess_path = multiprocess_path
        self.registry = CollectorRegistry(auto_describe=True)
        self.requests = Counter(
            "recsys_http_requests", "HTTP requests handled", ["method", "route", "status"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "recsys_http_request_duration_seconds", "Request latency",
            ["method", "route", "status"], buckets=LATENCY_BUCKETS, registry=self.registry,
        )
        self.cache = Counter(
            "recsys_cache_requests", "Document cache lookups", ["result"], registry=self.registry
        )
        self.cache_hit = self.cache.labels("hit")
        self.cache_miss = self.cache.labels("miss")
        self.cache_entries = Gauge(
            "recsys_cache_entries", "Documents in the cache", registry=self.registry,
            multiprocess_mode="livesum",
        )
        self.active_version = Gauge(
            ACTIVE_VERSION_METRIC, "The model version being served (value 1)",
            ["version"], registry=self.registry, multiprocess_mode="livemax",
        )
        self.mongo_errors = Counter(
            "recsys_mongodb_errors", "MongoDB errors seen by the API", ["kind"],
            registry=self.registry,
        )
        self.rate_limited = Counter(
            "recsys_rate_limited", "Requests refused by the rate limiter", registry=self.registry
        )
        self._version: str | None = None
        self._exposed = self.registry
        if multiprocess_path is not None:
            self._exposed = CollectorRegistry(auto_describe=True)
            self._exposed.register(_WorkersCollector(multiprocess_path))  # type: ignore[arg-type]

    def set_active_version(self, version: str | None) -> None:
        if self._version is not None and self._version != version:
            # 0 first: a worker's file keeps the label after remove() (dropped at exposition)
            self.active_version.labels(self._version).set(0)
            self.active_version.remove(self._version)
        self._version = version
        if version is not None:
            self.active_version.labels(version).set(1)

    def exposition(self) -> bytes:
        """The Prometheus text of this process, or of every worker in multiprocess mode."""
        return generate_latest(self._exposed)

    def process_exit(self) -> None:
        """A worker stops: its live gauges leave the sums (its counters stay in the totals)."""
        if self.multiprocess_path is not None:
            mark_process_dead(os.getpid(), str(self.multiprocess_path))
