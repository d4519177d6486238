"""The worker registry: heartbeats that workers write and the API and watchdog read."""

from __future__ import annotations

import json
import time
from typing import Any

import redis

from core.names import KEY_PREFIX as P
from core.redistext import text

REGISTRY = f"{P}workers"


def worker_key(name: str) -> str:
    return f"{P}worker:{name}"


def write_heartbeat(client: redis.Redis, name: str, info: dict[str, Any], *, ttl: float) -> None:
    """Record that worker ``name`` is alive, with what it reports about itself."""
    payload = dict(info, name=name, last_seen=time.time())
    pipe = client.pipeline(transaction=False)
    pipe.set(worker_key(name), json.dumps(payload), px=int(ttl * 1000))
    pipe.zadd(REGISTRY, {name: payload["last_seen"]})
    pipe.execute()


def remove_worker(client: redis.Redis, name: str) -> None:
    """Forget a worker that shut down cleanly."""
    pipe = client.pipeline(transaction=False)
    pipe.delete(worker_key(name))
    pipe.zrem(REGISTRY, name)
    pipe.execute()


def is_alive(client: redis.Redis, name: str | None) -> bool:
    """Return whether worker ``name`` has a live heartbeat."""
    return bool(name) and bool(client.exists(worker_key(name or "")))


def list_workers(client: redis.Redis, *, keep_dead_for: float = 3600.0) -> list[dict[str, Any]]:
    """Return every worker seen recently, with ``alive`` set from its heartbeat."""
    now = time.time()
    client.zremrangebyscore(REGISTRY, "-inf", now - keep_dead_for)
    names = [text(n) for n in client.zrevrange(REGISTRY, 0, -1)]
    if not names:
        return []
    raws = client.mget([worker_key(n) for n in names])
    seen = dict(zip(names, client.zmscore(REGISTRY, names)))
    workers = []
    for name, raw in zip(names, raws):
        if raw is not None:
            info = json.loads(raw)
            info["alive"] = True
        else:
            info = {"name": name, "last_seen": seen.get(name), "alive": False}
        workers.append(info)
    return workers
