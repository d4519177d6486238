"""``verifier worker-health``: is a worker on this host alive (heartbeat in Redis) and warm?

A container health check for workers. It reads the heartbeats workers write to Redis
(``core.workers``) and passes when one from this host (``socket.gethostname()``, which in a
container is the container's own hostname) is alive, consumes the queues asked for, and, for
``verify``, has its model loaded. It never loads a model itself.
"""

from __future__ import annotations

import argparse
import socket
import sys
import time
from typing import Any

import redis

from core.names import VERIFY_QUEUE, WEBHOOK_QUEUE
from core.settings import Settings, str_tuple
from core.workers import heartbeat_current, list_workers


def add_parser(sub: Any) -> None:
    """Add the ``worker-health`` command to the ``verifier`` parser."""
    health = sub.add_parser("worker-health", help="exit 0 when a worker on this host has a live heartbeat")
    health.add_argument("--queues", default=VERIFY_QUEUE,
                        help=f"comma-separated queues the worker must consume ({VERIFY_QUEUE},{WEBHOOK_QUEUE})")
    health.add_argument("--host", default=None, help="the worker's host name (default: this host's)")


def healthy_workers(workers: list[dict[str, Any]], *, host: str, queues: tuple[str, ...],
                    now: float, dead_after: float) -> list[dict[str, Any]]:
    """Return the workers in ``workers`` that are alive on ``host``, serve ``queues`` and are warm."""
    found = []
    for w in workers:
        if w.get("host") != host or not heartbeat_current(w, now=now, dead_after=dead_after):
            continue
        if not set(queues) <= set(w.get("queues") or ()):
            continue
        if VERIFY_QUEUE in queues and not w.get("model_loaded"):
            continue
        found.append(w)
    return found


def run_worker_health(settings: Settings, args: argparse.Namespace) -> int:
    """Run ``verifier worker-health``: 0 when healthy, 1 otherwise (with the reason on stderr)."""
    queues = str_tuple(args.queues)
    host = args.host or socket.gethostname()
    client = redis.Redis.from_url(settings.redis_url, socket_connect_timeout=3, socket_timeout=5)
    try:
        workers = list_workers(client)
    except redis.RedisError as exc:
        print(f"verifier worker-health: Redis at {settings.redis_url} failed: {exc}", file=sys.stderr)
        return 1
    finally:
        client.close()
    found = healthy_workers(workers, host=host, queues=queues, now=time.time(),
                            dead_after=settings.worker_dead_after_seconds)
    if not found:
        print(f"verifier worker-health: no live {'+'.join(queues)} worker on host {host!r}"
              + (" with a warm model" if VERIFY_QUEUE in queues else ""), file=sys.stderr)
        return 1
    print(f"ok: {', '.join(w['name'] for w in found)}")
    return 0
