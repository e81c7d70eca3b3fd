"""Prometheus metrics of one API process (its own registry, so several apps can coexist)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)


class ApiMetrics:
    """The API's metrics, exposed at `/metrics`.

    - ``recsys_http_requests_total{method,route,status}``
    - ``recsys_http_request_duration_seconds{method,route,status}`` (histogram)
    - ``recsys_cache_requests_total{result="hit"|"miss"}``; hit ratio =
      ``rate(...{result="hit"}) / rate(recsys_cache_requests_total)``
    - ``recsys_cache_entries``
    - ``recsys_active_model_version_info{version}`` (1 for the served version)
    - ``recsys_mongodb_errors_total{kind}`` (``unavailable``, ``fail_fast``, ``error``)
    - ``recsys_rate_limited_total``
    """

    def __init__(self) -> None:
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
            "recsys_cache_entries", "Documents in the cache", registry=self.registry
        )
        self.active_version = Gauge(
            "recsys_active_model_version_info", "The model version being served (value 1)",
            ["version"], registry=self.registry,
        )
        self.mongo_errors = Counter(
            "recsys_mongodb_errors", "MongoDB errors seen by the API", ["kind"],
            registry=self.registry,
        )
        self.rate_limited = Counter(
            "recsys_rate_limited", "Requests refused by the rate limiter", registry=self.registry
        )

    def set_active_version(self, version: str | None) -> None:
        self.active_version.clear()
        if version is not None:
            self.active_version.labels(version).set(1)
