"""The stats document behind ``GET /v1/stats`` and the ops dashboard, read from Redis."""

from __future__ import annotations

import time
from datetime import datetime, timezone
from typing import Any

import redis

from core import metrics
from core.workers import list_workers

FINAL = ("succeeded", "failed", "canceled")
PERCENTILES = (("p50", 0.50), ("p95", 0.95), ("p99", 0.99))
LATEST_PER_CODE = 5


def _rfc3339(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, timezone.utc).isoformat(timespec="seconds").replace("+00:00", "Z")


def _latency(counts: dict[str, int]) -> dict[int, int]:
    return {int(k[4:]): v for k, v in counts.items() if k.startswith("lat:")}


def _percentiles(buckets: dict[int, int]) -> dict[str, float | None]:
    return {name: _round(metrics.percentile(buckets, q)) for name, q in PERCENTILES}


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 4)


def throughput(client: redis.Redis, *, window_minutes: int, now: float) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Return per-minute buckets (oldest first) and the window's totals, codes and latency."""
    current = metrics.minute_of(now)
    minutes = list(range(current - window_minutes + 1, current + 1))
    rows, totals = [], dict.fromkeys(FINAL, 0)
    codes: dict[str, int] = {}
    webhooks: dict[str, int] = {}
    window_latency: dict[int, int] = {}
    for minute, counts in zip(minutes, metrics.read_minutes(client, minutes)):
        latency = _latency(counts)
        for index, count in latency.items():
            window_latency[index] = window_latency.get(index, 0) + count
        for status in FINAL:
            totals[status] += counts.get(status, 0)
        for field, count in counts.items():
            if field.startswith("code:"):
                codes[field[5:]] = codes.get(field[5:], 0) + count
            elif field.startswith("webhook:"):
                webhooks[field[8:]] = webhooks.get(field[8:], 0) + count
        row: dict[str, Any] = {"minute": _rfc3339(minute * 60), "ts": minute * 60}
        row.update({status: counts.get(status, 0) for status in FINAL})
        row.update({k: v for k, v in _percentiles(latency).items() if k != "p99"})
        rows.append(row)
    summary = {
        "totals": totals,
        "codes": codes,
        "webhooks": webhooks,
        "latency": dict(_percentiles(window_latency), count=sum(window_latency.values())),
    }
    return rows, summary


def failures(client: redis.Redis, codes: dict[str, int], *, since: float) -> list[dict[str, Any]]:
    """Group the window's failures by code, most frequent first, with the latest jobs of each."""
    latest: dict[str, list[dict[str, Any]]] = {}
    for entry in metrics.read_recent(client, "failures"):
        if entry.get("ts", 0) < since:
            break  # newest first: the rest is older still
        bucket = latest.setdefault(entry["code"], [])
        if len(bucket) < LATEST_PER_CODE:
            bucket.append({"id": entry["id"], "at": entry.get("at"), "message": entry.get("message", "")})
    # A code may appear in the list but not the minute buckets only at a minute's edge: count it.
    merged = {code: max(codes.get(code, 0), len(jobs)) for code, jobs in latest.items()}
    merged.update({code: n for code, n in codes.items() if code not in merged})
    order = sorted(merged, key=lambda code: (-merged[code], code))
    return [{"code": code, "count": merged[code], "latest": latest.get(code, [])} for code in order]


def workers(client: redis.Redis, *, dead_after: float, now: float) -> dict[str, Any]:
    """Return the workers seen in the last hour, newest heartbeat first, and how many are up."""
    rows = []
    for info in list_workers(client, dead_after=dead_after, now=now):
        alive, last_seen = info["alive"], info.get("last_seen") or 0.0
        rows.append({
            "name": info["name"],
            "alive": alive,
            "model_loaded": bool(info.get("model_loaded")) and alive,
            "model": info.get("model"),
            "device": info.get("device"),
            "dtype": info.get("dtype"),
            "queues": info.get("queues", []),
            "last_seen": _rfc3339(last_seen) if last_seen else None,
            "last_seen_seconds_ago": round(max(0.0, now - last_seen), 1) if last_seen else None,
            "jobs": info.get("jobs"),
            "batches": info.get("batches"),
            "mean_batch_pairs": info.get("mean_batch_pairs"),
        })
    return {
        "alive": sum(w["alive"] for w in rows),
        "warm": sum(w["model_loaded"] for w in rows),
        "list": rows,
    }


def build_stats(
    client: redis.Redis, broker: redis.Redis, *, window_minutes: int, dead_after: float, now: float | None = None
) -> dict[str, Any]:
    """Return the stats document: throughput, latency, queues, workers, failures, webhooks.

    Redis errors propagate: the caller answers 503.
    """
    now = time.time() if now is None else now
    rows, summary = throughput(client, window_minutes=window_minutes, now=now)
    since = (metrics.minute_of(now) - window_minutes + 1) * 60
    depths = metrics.queue_depths(broker)
    queue_state = metrics.job_queue_state(client, now=now)
    age = queue_state["oldest_queued_age_seconds"]
    workers_doc = workers(client, dead_after=dead_after, now=now)
    webhook_failures = [e for e in metrics.read_recent(client, "webhook_failures", limit=20) if e.get("ts", 0) >= since]
    failed_webhooks = sum(n for outcome, n in summary["webhooks"].items() if outcome in metrics.WEBHOOK_FAILURE_OUTCOMES)
    state = "ok" if workers_doc["warm"] else "no_workers"
    return {
        "state": state,
        "generated_at": _rfc3339(now),
        "window_minutes": window_minutes,
        "totals": summary["totals"],
        "throughput": rows,
        "latency": summary["latency"],
        "queues": {
            "depths": depths,
            "queued_jobs": queue_state["queued_jobs"],
            "running_jobs": queue_state["running_jobs"],
            "oldest_queued_age_seconds": None if age is None else round(age, 1),
        },
        "workers": workers_doc,
        "failures": failures(client, summary["codes"], since=since),
        "webhooks": {
            "outcomes": summary["webhooks"],
            "failed": failed_webhooks,
            "recent_failures": webhook_failures,
        },
    }
