"""``GET /metrics``: the Redis-held figures of every process, in Prometheus text format."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from typing import Any

import redis
from flask import Blueprint, Response, current_app
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector

from api.context import get_settings
from api.auth import require_scope
from api.context import get_broker
from core import metrics
from core.workers import list_workers

log = logging.getLogger(__name__)
bp = Blueprint("metrics", __name__)
PREFIX = "caption_verifier_"


def _bound(value: float) -> str:
    return f"{value:g}" if value != int(value) else f"{value:.1f}"


class RedisCollector(Collector):
    """Render the counters, histograms and gauges kept in Redis at scrape time."""

    def __init__(self, client: redis.Redis, broker: redis.Redis, *, dead_after: float) -> None:
        self.redis = client
        self.broker = broker
        self.dead_after = dead_after

    def collect(self) -> Iterator[Metric]:
        up = GaugeMetricFamily(PREFIX + "redis_up", "Whether the API could read the figures from Redis.")
        try:
            families = list(self._families())
        except redis.RedisError as exc:
            log.warning("metrics: Redis unreachable: %s", exc)
            up.add_metric([], 0)
            yield up
            return
        up.add_metric([], 1)
        yield up
        yield from families

    def _families(self) -> Iterator[Metric]:
        now = time.time()
        depth = GaugeMetricFamily(PREFIX + "queue_messages", "Messages waiting in a Celery queue, all priorities.",
                                  labels=["queue"])
        for queue, n in metrics.queue_depths(self.broker).items():
            depth.add_metric([queue], n)
        yield depth
        state = metrics.job_queue_state(self.redis, now=now)
        yield GaugeMetricFamily(PREFIX + "jobs_queued", "Jobs in status queued.", value=state["queued_jobs"])
        yield GaugeMetricFamily(PREFIX + "jobs_running", "Jobs in status running.", value=state["running_jobs"])
        yield GaugeMetricFamily(PREFIX + "oldest_queued_job_age_seconds",
                                "Age of the oldest queued job (0 when none is queued).",
                                value=state["oldest_queued_age_seconds"] or 0.0)
        jobs = CounterMetricFamily(PREFIX + "jobs_finished", "Jobs that reached a final status, by error code.",
                                   labels=["status", "code"])
        for (status, code), n in sorted(metrics.job_counts(self.redis).items()):
            jobs.add_metric([status, code], n)
        yield jobs
        for name, (buckets, count, total) in metrics.read_histograms(self.redis).items():
            hist = metrics.HISTOGRAMS[name]
            cumulative, running = [], 0
            for bound, n in zip([*map(_bound, hist.bounds), "+Inf"], buckets):
                running += n
                cumulative.append((bound, running))
            yield HistogramMetricFamily(PREFIX + name, hist.help, buckets=cumulative, sum_value=total)
        hooks = CounterMetricFamily(PREFIX + "webhook_deliveries", "Webhook delivery attempts by outcome.",
                                    labels=["outcome"])
        for outcome, n in sorted(metrics.webhook_counts(self.redis).items()):
            hooks.add_metric([outcome], n)
        yield hooks
        yield from self._workers(now)

    def _workers(self, now: float) -> Iterator[Metric]:
        up = GaugeMetricFamily(PREFIX + "worker_up", "Whether the worker's heartbeat is current.", labels=["worker"])
        warm = GaugeMetricFamily(PREFIX + "worker_model_loaded", "Whether the worker holds a warm model.",
                                 labels=["worker"])
        info = GaugeMetricFamily(PREFIX + "worker_info", "What the worker runs (always 1).",
                                 labels=["worker", "model", "device", "dtype", "queues"])
        seen = GaugeMetricFamily(PREFIX + "worker_last_heartbeat_timestamp_seconds",
                                 "Unix time of the worker's last heartbeat.", labels=["worker"])
        for w in list_workers(self.redis, dead_after=self.dead_after, now=now):
            name, last, alive = w["name"], float(w.get("last_seen") or 0.0), w["alive"]
            up.add_metric([name], int(alive))
            warm.add_metric([name], int(alive and bool(w.get("model_loaded"))))
            info.add_metric([name, str(w.get("model") or ""), str(w.get("device") or ""), str(w.get("dtype") or ""),
                             ",".join(w.get("queues") or [])], 1)
            seen.add_metric([name], last)
        yield from (up, warm, info, seen)


def _registry() -> CollectorRegistry:
    ext: dict[str, Any] = current_app.extensions["verifier"]
    if "metrics_registry" not in ext:
        registry = CollectorRegistry(auto_describe=False)
        registry.register(RedisCollector(ext["redis"], get_broker(),
                                         dead_after=get_settings().worker_dead_after_seconds))
        ext["metrics_registry"] = registry
    return ext["metrics_registry"]


@bp.get("/metrics")
def prometheus_metrics() -> Any:
    """Return every figure in Prometheus text format (``redis_up`` 0 when Redis is down)."""
    if not get_settings().metrics_public:
        require_scope("operator")
    return Response(generate_latest(_registry()), mimetype=CONTENT_TYPE_LATEST)
