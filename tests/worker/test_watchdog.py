"""The watchdog against a real Redis: lost queued jobs go back, judged by the broker's queue."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest
import redis as redis_lib

from core.jobs import Job
from core.names import KEY_PREFIX, VERIFY_QUEUE
from core.store import JobStore
from worker.watchdog import Watchdog


@pytest.fixture()
def broker(redis_url: str) -> Iterator[redis_lib.Redis]:
    """A broker on another database of the same server, as with VERIFIER_BROKER_URL set apart."""
    base, _, db = redis_url.rpartition("/")
    client = redis_lib.Redis.from_url(f"{base}/{(int(db or 0) + 1) % 16}")
    client.delete(VERIFY_QUEUE)
    yield client
    client.delete(VERIFY_QUEUE)


def test_a_lost_queued_job_is_enqueued_again_only_when_the_brokers_queue_is_empty(
    redis_client: redis_lib.Redis, broker: redis_lib.Redis
) -> None:
    # Given a job queued long ago whose message is gone, and a broker set apart from the store
    redis_client.flushdb()
    store = JobStore(redis_client, result_ttl_seconds=60)
    job, _ = store.create(Job(image="s3://b/k.jpg", texts=["a"], threshold=0.5, tenant="t-watchdog"))
    enqueued: list[str] = []
    watchdog = Watchdog(redis_client, store, lambda j: enqueued.append(j.id), name="w", interval=0.01,
                        stale_after=1.0, stuck_after=900.0, broker=broker)
    later = time.time() + 10.0
    # When the broker still holds a verify message, the job may yet be delivered: leave it
    broker.rpush(VERIFY_QUEUE, b"a message")
    assert watchdog.sweep(now=later) == 0 and enqueued == []
    # When the broker's queue is empty (the store's Redis never held it), the job is put back once
    broker.delete(VERIFY_QUEUE)
    redis_client.delete(f"{KEY_PREFIX}watchdog")  # the pass lock, so the next pass runs at once
    assert watchdog.sweep(now=later) == 1 and enqueued == [job.id]
