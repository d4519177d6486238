"""The job store against a real Redis."""

from __future__ import annotations

import pytest
import redis as redis_lib

from core.errors import Conflict, ImageInvalid, NotFound
from core.jobs import ImageInfo, Job, JobResult, ModelInfo, PairResult, Status
from core.store import JobStore


@pytest.fixture()
def store(redis_client: redis_lib.Redis) -> JobStore:
    return JobStore(redis_client, result_ttl_seconds=60)


def _job(tenant: str = "t-store") -> Job:
    return Job(image="s3://b/k.jpg", texts=["a"], threshold=0.5, tenant=tenant)


def _result() -> JobResult:
    return JobResult(
        match=True,
        scores=[PairResult(text="a", match_probability=0.9, cosine_similarity=0.3, match=True)],
        model=ModelInfo(name="m", revision="r"),
        image=ImageInfo(etag="e", width=1, height=1),
    )


def test_lifecycle_queued_running_succeeded_with_ttl(store: JobStore, redis_client: redis_lib.Redis) -> None:
    job, created = store.create(_job())
    assert created and redis_client.ttl(store.job_key(job.id)) == -1
    started = store.start(job.id, worker="w1")
    assert started is not None and started.status == Status.RUNNING and started.attempts == 1
    assert job.id in store.running_jobs(older_than=1e12)
    done = store.succeed(job.id, _result(), worker="w1")
    assert done is not None and done.status == Status.SUCCEEDED and done.finished_at
    assert 0 < redis_client.ttl(store.job_key(job.id)) <= 60
    assert job.id not in store.running_jobs(older_than=1e12)


def test_result_is_written_once(store: JobStore) -> None:
    job, _ = store.create(_job())
    store.start(job.id, worker="w1")
    assert store.succeed(job.id, _result(), worker="w1") is not None
    # A second run (a redelivered message) must not overwrite the first result.
    assert store.succeed(job.id, _result(), worker="w1") is None
    assert store.fail(job.id, ImageInvalid()) is None
    assert store.start(job.id, worker="w2") is None
    assert store.require(job.id).status == Status.SUCCEEDED


def test_only_the_owning_worker_records_the_result(store: JobStore) -> None:
    job, _ = store.create(_job())
    store.start(job.id, worker="w1")
    assert store.start(job.id, worker="w2") is None  # w1 is alive: no take-over
    taken = store.start(job.id, worker="w2", may_take_over=lambda j: True)
    assert taken is not None and taken.worker == "w2" and taken.attempts == 2
    assert store.succeed(job.id, _result(), worker="w1") is None
    assert store.succeed(job.id, _result(), worker="w2") is not None


def test_fail_and_cancel(store: JobStore) -> None:
    job, _ = store.create(_job())
    failed = store.fail(job.id, ImageInvalid("broken"))
    assert failed is not None and failed.error is not None and failed.error.code == "image_invalid"
    with pytest.raises(Conflict):
        store.cancel(job.id)
    other, _ = store.create(_job())
    assert store.cancel(other.id).status == Status.CANCELED
    with pytest.raises(NotFound):
        store.cancel(other.id, tenant="someone-else")


def test_idempotency_is_scoped_per_tenant(store: JobStore) -> None:
    a = _job("tenant-a")
    a.request_hash = "h1"
    first, created = store.create(a, idempotency_key="k")
    again = _job("tenant-a")
    again.request_hash = "h1"
    same, created_again = store.create(again, idempotency_key="k")
    assert created and not created_again and same.id == first.id
    b = _job("tenant-b")
    b.request_hash = "h1"
    other, created_b = store.create(b, idempotency_key="k")
    assert created_b and other.id != first.id


def test_listing_skips_expired_jobs(store: JobStore, redis_client: redis_lib.Redis) -> None:
    tenant = "t-expire"
    jobs = [store.create(_job(tenant))[0] for _ in range(3)]
    redis_client.delete(store.job_key(jobs[1].id))  # as if its TTL ran out
    listed, cursor = store.list(tenant=tenant, limit=10)
    assert [j.id for j in listed] == [jobs[2].id, jobs[0].id] and cursor is None
    assert store.count(tenant=tenant, status="all") == 2


def test_finishing_a_job_with_a_webhook_schedules_a_backstop_delivery(store: JobStore) -> None:
    from core.deliveries import DUE_KEY
    from core.jobs import WebhookState

    # Given a job with a webhook that a worker finishes
    job = _job()
    job.webhook = WebhookState(url="http://127.0.0.1:9/hook")
    store.create(job)
    store.start(job.id, worker="w1")
    store.succeed(job.id, _result(), worker="w1")
    # Then the webhook schedule holds it, so a crash before the enqueue loses no delivery
    due = store.redis.zscore(DUE_KEY, job.id)
    assert due is not None and due > store.clock()
    # And a job without a webhook is not scheduled
    plain, _ = store.create(_job())
    store.fail(plain.id, ImageInvalid())
    assert store.redis.zscore(DUE_KEY, plain.id) is None


def test_start_fails_a_job_started_too_often(store: JobStore) -> None:
    # Given a job whose workers keep dying: each start is taken over from a dead worker
    job, _ = store.create(_job())
    for worker in ("w1", "w2"):
        started = store.start(job.id, worker=worker, may_take_over=lambda j: True, max_starts=2)
        assert started is not None and started.status == Status.RUNNING
    # When it would start a third time
    crashed = store.start(job.id, worker="w3", may_take_over=lambda j: True, max_starts=2)
    # Then it is failed as poison, in the same write, and never runs again
    assert crashed is not None and crashed.status == Status.FAILED
    assert crashed.error is not None and crashed.error.code == "worker_crashed" and crashed.attempts == 2
    assert store.start(job.id, worker="w4", may_take_over=lambda j: True, max_starts=2) is None
