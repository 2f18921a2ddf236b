"""Prometheus metrics of the server (``GET /metrics``, text exposition format).

Series:

- ``gsu_requests_total{endpoint, status}`` — requests answered, by HTTP status;
- ``gsu_request_errors_total{endpoint, reason}`` — 4xx/5xx answers by reason class;
- ``gsu_request_latency_seconds{endpoint}`` — histogram, from the request's arrival to
  its answer (queueing and batching included);
- ``gsu_batch_queries{index}`` / ``gsu_batch_requests{index}`` — histograms of the
  micro-batches actually run: queries and requests per index call;
- ``gsu_index_version{index}`` — the served file's version (its modification time in ns,
  the value reported in responses) and ``gsu_index_swaps_total{index}`` /
  ``gsu_index_load_errors_total{index}``.

With several worker processes, ``PROMETHEUS_MULTIPROC_DIR`` (set by ``gsu serve``) makes
every worker write its samples to files there and ``/metrics`` add them up across
workers (prometheus_client's multiprocess mode; gauges keep one series per worker pid).
"""

from __future__ import annotations

import os

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client import CONTENT_TYPE_LATEST, disable_created_metrics

disable_created_metrics()  # no *_created series: they double the output and say nothing here

__all__ = ["ServerMetrics", "CONTENT_TYPE_LATEST"]

LATENCY_BUCKETS = (0.0005, 0.001, 0.002, 0.003, 0.005, 0.0075, 0.01, 0.015, 0.02, 0.03, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024)


def _multiproc() -> bool:
    return bool(os.environ.get("PROMETHEUS_MULTIPROC_DIR"))


class ServerMetrics:
    """The server's metric families, in their own registry (one per app)."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.requests = Counter("gsu_requests", "Requests answered", ["endpoint", "status"], registry=r)
        self.errors = Counter("gsu_request_errors", "Requests answered with an error, by reason", ["endpoint", "reason"], registry=r)
        self.latency = Histogram("gsu_request_latency_seconds", "Time from a request's arrival to its answer", ["endpoint"],
                                 buckets=LATENCY_BUCKETS, registry=r)
        self.batch_queries = Histogram("gsu_batch_queries", "Queries per micro-batch (one index call)", ["index"],
                                       buckets=BATCH_BUCKETS, registry=r)
        self.batch_requests = Histogram("gsu_batch_requests", "Requests per micro-batch (one index call)", ["index"],
                                        buckets=BATCH_BUCKETS, registry=r)
        gauge_mode = {"multiprocess_mode": "liveall"} if _multiproc() else {}
        self.index_version = Gauge("gsu_index_version", "Version (file mtime in ns) of the served index file", ["index"],
                                   registry=r, **gauge_mode)
        self.index_items = Gauge("gsu_index_items", "Items in the served index", ["index"], registry=r, **gauge_mode)
        self.swaps = Counter("gsu_index_swaps", "Index files swapped in while serving", ["index"], registry=r)
        self.load_errors = Counter("gsu_index_load_errors", "New index files that failed to load (the old one stays)", ["index"],
                                   registry=r)

    def render(self) -> bytes:
        """The text exposition of every series (summed over workers in multiprocess mode)."""
        if _multiproc():
            from prometheus_client import multiprocess

            reg = CollectorRegistry()
            multiprocess.MultiProcessCollector(reg)
            return generate_latest(reg)
        return generate_latest(self.registry)
