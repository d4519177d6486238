"""Recording and reading the Redis-held metrics (a real Redis)."""

from __future__ import annotations

import math
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone

import pytest
import redis as redis_lib

from core import metrics
from core.jobs import Job, JobErrorBody, Status
from core.store import JobStore


def _at(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def finished_job(status: Status, *, created: float, started: float, finished: float, code: str | None = None) -> Job:
    """Return a job as a worker leaves it in its final status."""
    job = Job(image="s3://b/k.jpg", texts=["x"], threshold=0.5, status=status,
              created_at=_at(created), started_at=_at(started), finished_at=_at(finished))
    if code:
        job.error = JobErrorBody(code=code, message=f"it failed: {code}")
    return job


@pytest.fixture()
def r(redis_client: redis_lib.Redis) -> Iterator[redis_lib.Redis]:
    """The test Redis with no metrics, queued or running index left by earlier tests."""

    def clean() -> None:
        keys = list(redis_client.scan_iter(f"{metrics.M}*"))
        redis_client.delete(*keys, metrics.QUEUED_INDEX, metrics.RUNNING_INDEX)

    clean()
    yield redis_client
    clean()


@pytest.mark.parametrize("seconds", [0.0005, 0.001, 0.0011, 0.05, 0.3, 1.0, 7.5, 120.0])
def test_latency_bucket_holds_its_value(seconds: float) -> None:
    low, high = metrics.latency_bucket_bounds(metrics.latency_bucket(seconds))
    assert low <= seconds <= high * (1 + 1e-9)


@pytest.mark.parametrize(("values", "q", "expected"), [
    ([0.3] * 10, 0.5, 0.3),
    ([0.1] * 90 + [2.0] * 10, 0.5, 0.1),
    ([0.1] * 90 + [2.0] * 10, 0.99, 2.0),
    ([0.1] * 50 + [1.0] * 50, 0.95, 1.0),
])
def test_percentile_is_within_a_bucket_of_the_truth(values: list[float], q: float, expected: float) -> None:
    buckets: dict[int, int] = {}
    for v in values:
        buckets[metrics.latency_bucket(v)] = buckets.get(metrics.latency_bucket(v), 0) + 1
    got = metrics.percentile(buckets, q)
    assert got is not None and abs(math.log(got / expected)) <= math.log(1.2)


def test_percentile_of_nothing_is_none() -> None:
    assert metrics.percentile({}, 0.5) is None


def test_record_job_counts_status_code_histograms_and_minute(r: redis_lib.Redis) -> None:
    # Given three succeeded jobs and one failed one, finished now
    now = 1_800_000_000.0
    for wait, total in [(0.02, 0.3), (0.2, 0.6), (0.04, 0.9)]:
        metrics.record_job(r, finished_job(Status.SUCCEEDED, created=now - total, started=now - total + wait,
                                           finished=now), now=now)
    failed = finished_job(Status.FAILED, created=now - 2, started=now - 1.5, finished=now, code="image_not_found")
    metrics.record_job(r, failed, now=now)

    # Then the counters are per (status, code)
    assert metrics.job_counts(r) == {("succeeded", ""): 3, ("failed", "image_not_found"): 1}
    hists = metrics.read_histograms(r)
    buckets, count, total = hists["job_total_seconds"]
    assert count == 4 and total == pytest.approx(0.3 + 0.6 + 0.9 + 2.0, abs=0.01)
    bounds = metrics.HISTOGRAMS["job_total_seconds"].bounds
    assert buckets[bounds.index(0.5)] == 1 and buckets[bounds.index(1.0)] == 2 and buckets[bounds.index(2.5)] == 1
    assert hists["job_queue_wait_seconds"][1] == 4
    assert hists["image_fetch_seconds"][1] == 0

    # And the minute bucket has statuses, codes and the succeeded jobs' latencies
    [minute] = metrics.read_minutes(r, [metrics.minute_of(now)])
    assert minute["succeeded"] == 3 and minute["failed"] == 1 and minute["code:image_not_found"] == 1
    assert sum(v for k, v in minute.items() if k.startswith("lat:")) == 3
    assert 0 < r.ttl(metrics.minute_key(metrics.minute_of(now))) <= metrics.MINUTE_TTL
    [entry] = metrics.read_recent(r, "failures")
    assert entry["id"] == failed.id and entry["code"] == "image_not_found"


def test_unknown_error_codes_do_not_make_new_label_values(r: redis_lib.Redis) -> None:
    job = finished_job(Status.FAILED, created=1.0, started=2.0, finished=3.0, code="Weird Code/with spaces")
    metrics.record_job(r, job)
    assert metrics.job_counts(r) == {("failed", "other"): 1}


def test_stage_and_batch_observations(r: redis_lib.Redis) -> None:
    job = finished_job(Status.SUCCEEDED, created=1.0, started=2.0, finished=3.0)
    metrics.record_job(r, job, stages={"fetch": 0.004, "decode": 0.02, "inference": 0.2, "not-a-stage": 1.0})
    metrics.record_batch(r, 3, 7)
    hists = metrics.read_histograms(r)
    for name, value in [("image_fetch_seconds", 0.004), ("image_decode_seconds", 0.02), ("inference_seconds", 0.2)]:
        buckets, count, total = hists[name]
        assert count == 1 and total == pytest.approx(value)
        assert buckets[metrics.HISTOGRAMS[name].bucket(value)] == 1
    assert hists["batch_pairs"][1:] == (1, 7.0) and hists["batch_jobs"][1:] == (1, 3.0)


def test_record_webhook_counts_outcomes_and_keeps_failures(r: redis_lib.Redis) -> None:
    metrics.record_webhook(r, "delivered", job_id="a")
    metrics.record_webhook(r, "retrying", job_id="b", error="503 from consumer")
    metrics.record_webhook(r, "failed", job_id="b", error="gave up after 6 attempts")
    assert metrics.webhook_counts(r) == {"delivered": 1, "retrying": 1, "failed": 1}
    [entry] = metrics.read_recent(r, "webhook_failures")
    assert entry["job_id"] == "b" and entry["outcome"] == "failed"


def test_queue_depths_sum_kombus_priority_lists(r: redis_lib.Redis) -> None:
    names = metrics.priority_lists("metrics-test-q")
    assert names == ["metrics-test-q", "metrics-test-q:3", "metrics-test-q:6", "metrics-test-q:9"]
    try:
        r.rpush(names[0], "a")
        r.rpush(names[2], "b", "c")
        assert metrics.queue_depths(r, ["metrics-test-q"]) == {"metrics-test-q": 3}
    finally:
        r.delete(*names)


def test_store_keeps_the_global_queued_index(r: redis_lib.Redis) -> None:
    store = JobStore(r, result_ttl_seconds=60)
    old, new = Job(image="s3://b/1", texts=["x"], threshold=0.5), Job(image="s3://b/2", texts=["x"], threshold=0.5)
    old.created_us = int((datetime.now(timezone.utc) - timedelta(seconds=30)).timestamp() * 1e6)
    store.create(old)
    store.create(new)
    state = metrics.job_queue_state(r)
    assert state["queued_jobs"] == 2 and 29 < state["oldest_queued_age_seconds"] < 60

    store.start(old.id, worker="w")
    state = metrics.job_queue_state(r)
    assert state["queued_jobs"] == 1 and state["running_jobs"] == 1 and state["oldest_queued_age_seconds"] < 29
    store.cancel(new.id)
    assert metrics.job_queue_state(r)["queued_jobs"] == 0


def test_recorder_never_raises_when_redis_is_down(caplog: pytest.LogCaptureFixture) -> None:
    from tests.helpers import free_port

    from redis.backoff import NoBackoff
    from redis.retry import Retry

    dead = redis_lib.Redis(port=free_port(), socket_connect_timeout=0.5, retry=Retry(NoBackoff(), 0))
    recorder = metrics.Recorder(dead)
    recorder.job(finished_job(Status.SUCCEEDED, created=1.0, started=2.0, finished=3.0), stages={"fetch": 0.1})
    recorder.batch(1, 1)
    recorder.webhook("delivered")
    assert "could not record metrics" in caplog.text
