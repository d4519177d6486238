"""Reliability: jobs survive a worker killed mid-job, and finish once."""

from __future__ import annotations

import io
import time

import redis as redis_lib
import requests
from PIL import Image

from core.settings import Settings
from tests.helpers import wait_for
from tests.processes import running_api, running_worker, start_worker, wait_job, wait_worker_ready, worker_settings
from tests.s3proxy import slow_s3


def _jpeg(size: tuple[int, int], color: tuple[int, int, int]) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", size, color).save(buf, format="JPEG")
    return buf.getvalue()


def test_sigkilled_worker_job_finishes_once(redis_url, s3_endpoint, put_image) -> None:  # type: ignore[no-untyped-def]
    # Given a worker whose S3 downloads hang for a while, holding a running job
    redis_lib.Redis.from_url(redis_url).flushdb()
    base_settings = worker_settings(Settings.from_env(
        {}, redis_url=redis_url, s3_endpoint_url=s3_endpoint, model="random:tiny", batch_max_wait_ms=5
    ))
    uri = put_image(data=_jpeg((128, 128), (50, 90, 30)))
    with slow_s3(s3_endpoint, get_delay=30) as slow_endpoint, running_api(base_settings) as base:
        slow = Settings(**dict(base_settings.__dict__, s3_endpoint_url=slow_endpoint))
        victim = start_worker(slow, name="victim")
        try:
            wait_worker_ready(slow, victim)
            job_id = requests.post(f"{base}/v1/jobs", json={"image": uri, "text": "grass"}, timeout=10).json()["id"]
            wait_for(lambda: requests.get(f"{base}/v1/jobs/{job_id}", timeout=5).json()["status"] == "running",
                     timeout=30, what="job running")
            # When the worker process is killed outright mid-job
            victim.kill()
            victim.popen.wait(10)
        finally:
            victim.stop()
        # Then a healthy worker takes the job over once the victim's heartbeat lapses
        with running_worker(base_settings, name="rescuer"):
            doc = wait_job(base, job_id, timeout=60)
            assert doc["status"] == "succeeded", doc
            assert doc["attempts"] == 2
            finished = doc["finished_at"]
            time.sleep(2 * base_settings.worker_heartbeat_seconds + 1)
            again = requests.get(f"{base}/v1/jobs/{job_id}", timeout=5).json()
            assert again["finished_at"] == finished and again["result"] == doc["result"]
