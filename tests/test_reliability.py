"""Reliability: jobs survive a worker killed mid-job, and finish once."""

from __future__ import annotations

import io
import signal
import time
from datetime import datetime, timedelta, timezone

import redis as redis_lib
import requests
from PIL import Image

from core.settings import Settings
from tests.helpers import wait_for
from tests.redis_server import RedisServer
from tests.processes import Proc, running_api, running_worker, start_worker, wait_job, wait_worker_ready, worker_settings
from tests.s3proxy import slow_s3


def _jpeg(size: tuple[int, int], color: tuple[int, int, int]) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", size, color).save(buf, format="JPEG")
    return buf.getvalue()


def _job_running_on_new_worker(settings: Settings, base: str, uri: str, *, name: str) -> tuple[Proc, str]:
    """Start a worker, submit a job, and return once that worker is running it."""
    worker = start_worker(settings, name=name)
    try:
        wait_worker_ready(settings, worker)
        job_id = requests.post(f"{base}/v1/jobs", json={"image": uri, "text": "grass"}, timeout=10).json()["id"]
        wait_for(lambda: requests.get(f"{base}/v1/jobs/{job_id}", timeout=5).json()["status"] == "running",
                 timeout=30, what="job running")
    except BaseException:
        worker.stop()
        raise
    return worker, job_id


def test_sigkilled_worker_job_finishes_once(redis_url, s3_endpoint, put_image) -> None:  # type: ignore[no-untyped-def]
    # Given a worker whose S3 downloads hang for a while, holding a running job
    redis_lib.Redis.from_url(redis_url).flushdb()
    base_settings = worker_settings(Settings.from_env(
        {}, redis_url=redis_url, s3_endpoint_url=s3_endpoint, model="random:tiny", batch_max_wait_ms=5,
        auth_enabled=False,  # auth is not what these tests are about (tests/api/test_auth.py)
    ))
    uri = put_image(data=_jpeg((128, 128), (50, 90, 30)))
    with slow_s3(s3_endpoint, get_delay=30) as slow_endpoint, running_api(base_settings) as base:
        slow = Settings(**dict(base_settings.__dict__, s3_endpoint_url=slow_endpoint))
        victim, job_id = _job_running_on_new_worker(slow, base, uri, name="victim")
        # When the worker process is killed outright mid-job
        victim.crash()
        # Then a healthy worker takes the job over once the victim's heartbeat lapses
        with running_worker(base_settings, name="rescuer"):
            doc = wait_job(base, job_id, timeout=60)
            assert doc["status"] == "succeeded", (doc["error"], doc)
            assert doc["attempts"] == 2
            finished = doc["finished_at"]
            time.sleep(2 * base_settings.worker_heartbeat_seconds + 1)
            again = requests.get(f"{base}/v1/jobs/{job_id}", timeout=5).json()
            assert again["finished_at"] == finished and again["result"] == doc["result"]


def _settings(redis_url: str, s3_endpoint: str, **overrides: object) -> Settings:
    return worker_settings(Settings.from_env(
        {}, redis_url=redis_url, s3_endpoint_url=s3_endpoint, model="random:tiny", batch_max_wait_ms=5,
        auth_enabled=False,  # auth is not what these tests are about (tests/api/test_auth.py)
    ), **overrides)


def test_high_priority_first_and_expired_jobs_never_scored(redis_url, s3_endpoint, put_image) -> None:  # type: ignore[no-untyped-def]
    # Given jobs queued while no worker runs: five normal, then one high, then one that expires
    redis_lib.Redis.from_url(redis_url).flushdb()
    settings = _settings(redis_url, s3_endpoint)
    uri = put_image(data=_jpeg((64, 64), (9, 9, 9)))
    with running_api(settings) as base:
        post = lambda body: requests.post(f"{base}/v1/jobs", json=body, timeout=10).json()["id"]  # noqa: E731
        normal = [post({"image": uri, "text": f"normal {i}"}) for i in range(5)]
        high = post({"image": uri, "text": "urgent", "priority": "high"})
        soon = (datetime.now(timezone.utc) + timedelta(seconds=1)).isoformat()
        expiring = post({"image": uri, "text": "late", "deadline": soon})
        time.sleep(1.5)
        # When one single-threaded worker drains the queue
        with running_worker(settings, concurrency=1, name="priority"):
            docs = {i: wait_job(base, i) for i in [*normal, high, expiring]}
    # Then the high-priority job ran before every normal one
    assert all(d["status"] == "succeeded" for i, d in docs.items() if i != expiring)
    assert all(docs[high]["started_at"] < docs[i]["started_at"] for i in normal)
    # And the expired job failed without being scored
    assert docs[expiring]["status"] == "failed" and docs[expiring]["error"]["code"] == "expired"
    assert docs[expiring]["result"] is None


def test_poison_job_fails_worker_crashed_after_max_starts(redis_url, s3_endpoint, put_image) -> None:  # type: ignore[no-untyped-def]
    # Given a job whose every run dies with its worker (downloads hang; we SIGKILL mid-job)
    redis_lib.Redis.from_url(redis_url).flushdb()
    settings = _settings(redis_url, s3_endpoint, job_max_starts=2)
    uri = put_image(data=_jpeg((64, 64), (90, 9, 9)))
    with slow_s3(s3_endpoint, get_delay=60) as slow_endpoint, running_api(settings) as base:
        slow = Settings(**dict(settings.__dict__, s3_endpoint_url=slow_endpoint))
        job_id = requests.post(f"{base}/v1/jobs", json={"image": uri, "text": "x"}, timeout=10).json()["id"]
        for attempt in (1, 2):
            victim = start_worker(slow, name=f"poison-{attempt}")
            try:
                wait_for(lambda: requests.get(f"{base}/v1/jobs/{job_id}", timeout=5).json()["attempts"] == attempt,
                         timeout=60, what=f"start {attempt}")
                victim.crash()
            finally:
                victim.stop()
        # When a healthy worker finds it again
        with running_worker(settings, name="after-poison"):
            doc = wait_job(base, job_id, timeout=60)
    # Then it is failed as a crasher instead of being retried forever
    assert doc["status"] == "failed" and doc["error"]["code"] == "worker_crashed", doc
    assert doc["attempts"] == 2


def test_sigterm_finishes_the_in_flight_job(redis_url, s3_endpoint, put_image) -> None:  # type: ignore[no-untyped-def]
    redis_lib.Redis.from_url(redis_url).flushdb()
    settings = _settings(redis_url, s3_endpoint)
    uri = put_image(data=_jpeg((64, 64), (9, 90, 9)))
    with slow_s3(s3_endpoint, get_delay=3) as slow_endpoint, running_api(settings) as base:
        slow = Settings(**dict(settings.__dict__, s3_endpoint_url=slow_endpoint))
        worker, job_id = _job_running_on_new_worker(slow, base, uri, name="graceful")
        try:
            worker.kill(signal.SIGTERM)  # warm shutdown: finish what is running, take nothing new
            assert worker.popen.wait(30) == 0, worker.log()[-2000:]
        finally:
            worker.stop()
        doc = requests.get(f"{base}/v1/jobs/{job_id}", timeout=5).json()
    assert doc["status"] == "succeeded" and doc["attempts"] == 1, doc


def test_redis_restart_loses_no_job_and_api_says_503_meanwhile(s3_endpoint, put_image) -> None:  # type: ignore[no-untyped-def]
    server = RedisServer(appendonly=True)
    server.start()
    try:
        settings = _settings(server.url, s3_endpoint)
        uri = put_image(data=_jpeg((64, 64), (9, 9, 90)))
        with running_api(settings) as base:
            # Given accepted jobs waiting in the queue (no worker yet)
            queued = [requests.post(f"{base}/v1/jobs", json={"image": uri, "text": f"q{i}"}, timeout=10).json()["id"]
                      for i in range(5)]
            time.sleep(1.2)  # appendfsync everysec
            # When Redis dies hard and comes back from its append-only file
            server.stop(hard=True)
            down = requests.post(f"{base}/v1/jobs", json={"image": uri, "text": "while down"}, timeout=30)
            assert down.status_code == 503, down.text
            assert down.headers.get("Retry-After") and down.json()["error"]["code"] in (
                "redis_unavailable", "queue_unavailable")
            server.start()
            # Then a worker finds every accepted job, and keeps working across a second restart
            with running_worker(settings, name="after-restart"):
                docs = [wait_job(base, i) for i in queued]
                assert all(d["status"] == "succeeded" for d in docs)
                server.restart(hard=False, down_for=1.0)
                after = wait_for(lambda: requests.post(f"{base}/v1/jobs", json={"image": uri, "text": "after"},
                                                       timeout=10), timeout=30, what="API after restart")
                assert after.status_code == 202
                assert wait_job(base, after.json()["id"], timeout=60)["status"] == "succeeded"
    finally:
        server.close()
