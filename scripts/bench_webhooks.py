"""Webhook throughput: deliveries per second one ``verifier worker --queues webhooks`` sends.

N finished jobs with a webhook are stored and their delivery tasks enqueued first; then one
webhook worker starts and drains the queue into a local keep-alive receiver (http.server,
in this process). The rate is counted at the receiver, from its first request to its last,
so worker start-up is left out. Every delivery is signed; the receiver verifies none (its
cost would be the receiver's, not the worker's). Redis: a database of its own, emptied.

    python scripts/bench_webhooks.py [--jobs 3000] [--concurrency 16] [--redis redis://127.0.0.1:6379/14]
"""

from __future__ import annotations

import argparse
import base64
import sys
import time
from pathlib import Path

import redis

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def main() -> int:
    from api.queue import CeleryEnqueuer
    from core.jobs import Job, WebhookState
    from core.settings import Settings
    from core.store import JobStore
    from tests.processes import running_worker, worker_settings
    from tests.receivers import receiving

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=3000)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--redis", default="redis://127.0.0.1:6379/14")
    args = parser.parse_args()

    client = redis.Redis.from_url(args.redis)
    client.flushdb()
    secret = "whsec_" + base64.b64encode(b"bench secret of thirty-two bytes").decode()
    settings = worker_settings(Settings.from_env(
        {}, redis_url=args.redis, webhook_secrets=(secret,), webhook_allowlist=("127.0.0.0/8",),
        webhook_retry_delays=(1.0,), log_level="warning",
    ))
    store = JobStore(client, result_ttl_seconds=3600)
    try:
        with receiving() as rx:
            ids = []
            for _ in range(args.jobs):
                job = Job(image="s3://bench/cat.jpg", texts=["a cat"], threshold=0.5, metadata={"post": 42},
                          webhook=WebhookState(url=rx.url("/hook")))
                store.create(job)
                store.cancel(job.id)
                ids.append(job.id)
            enqueuer = CeleryEnqueuer(settings)
            for job_id in ids:
                enqueuer.webhook(job_id)
            began = time.perf_counter()
            with running_worker(settings, queues="webhooks", concurrency=args.concurrency, name="bench-webhooks"):
                deadline = time.monotonic() + 600
                while rx.count < args.jobs and time.monotonic() < deadline:
                    time.sleep(0.05)
                times = sorted(r.at for r in rx.requests)
            wall = time.perf_counter() - began
            delivered = sum(1 for job_id in ids if (j := store.get(job_id)) and j.webhook
                            and j.webhook.status == "delivered")
    finally:
        client.flushdb()
    span = times[-1] - times[0] if len(times) > 1 else float("nan")
    rate = (len(times) - 1) / span if span and span == span else float("nan")
    print(f"webhooks: {len(times)} requests received, {delivered}/{args.jobs} recorded delivered; "
          f"one worker, {args.concurrency} threads")
    print(f"webhooks: {rate:.0f} deliveries/s (first to last request: {span:.2f}s; "
          f"with worker start-up: {wall:.2f}s)")
    return 0 if delivered == args.jobs else 1


if __name__ == "__main__":
    raise SystemExit(main())
