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


def heartbeat_current(info: dict[str, Any], *, now: float, dead_after: float) -> bool:
    """Return whether a listed worker is up: its heartbeat key lives and its last beat (the
    writer's clock) is at most ``dead_after`` seconds old by the reader's ``now``."""
    return bool(info.get("alive")) and now - float(info.get("last_seen") or 0.0) <= dead_after


def list_workers(client: redis.Redis, *, dead_after: float | None = None, now: float | None = None,
                 keep_dead_for: float = 3600.0) -> list[dict[str, Any]]:
    """Return every worker seen recently, newest beat first, with ``alive`` set from its heartbeat
    (and, given ``dead_after``, from the age of its last beat too; see ``heartbeat_current``)."""
    pipe = client.pipeline(transaction=False)
    pipe.zremrangebyscore(REGISTRY, "-inf", time.time() - keep_dead_for)
    pipe.zrevrange(REGISTRY, 0, -1, withscores=True)
    seen = {text(name): score for name, score in pipe.execute()[1]}
    if not seen:
        return []
    workers = []
    for name, raw in zip(seen, client.mget([worker_key(n) for n in seen])):
        info = json.loads(raw) if raw is not None else {"name": name, "last_seen": seen[name]}
        info["alive"] = raw is not None
        if dead_after is not None:
            info["alive"] = heartbeat_current(info, now=time.time() if now is None else now, dead_after=dead_after)
        workers.append(info)
    return workers
