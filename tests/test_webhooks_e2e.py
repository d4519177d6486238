"""End to end: the API, a verify worker and a webhooks worker (real processes) → a real receiver."""

from __future__ import annotations

import base64
import io
from collections.abc import Iterator

import pytest
import redis as redis_lib
import requests
from PIL import Image
from standardwebhooks import Webhook

from core.settings import Settings
from tests.helpers import wait_for
from tests.processes import Proc, running_api, running_worker, wait_job, worker_settings
from tests.receivers import Receiver, receiving

SECRET = "whsec_" + base64.b64encode(b"end-to-end webhook secret 32byte").decode()


@pytest.fixture(scope="module")
def stack(redis_url: str, s3_endpoint: str) -> Iterator[tuple[Settings, str, Proc]]:
    """A verify worker, a webhooks worker and the API; yield the settings, the API's URL and the verify worker."""
    redis_lib.Redis.from_url(redis_url).flushdb()
    settings = worker_settings(Settings.from_env(
        {}, redis_url=redis_url, s3_endpoint_url=s3_endpoint, model="random:tiny", batch_max_wait_ms=5,
        auth_enabled=False, webhook_secrets=(SECRET,), webhook_allowlist=("127.0.0.0/8",),
        webhook_retry_delays=(0.2, 0.4), webhook_poll_seconds=0.1,
    ))
    with running_worker(settings, name="e2e-verify") as verify_worker, \
            running_worker(settings, queues="webhooks", name="e2e-webhooks"), \
            running_api(settings) as base:
        yield settings, base, verify_worker


@pytest.fixture()
def receiver() -> Iterator[Receiver]:
    with receiving() as rx:
        yield rx


def _jpeg() -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (64, 48), (30, 140, 60)).save(buf, format="JPEG")
    return buf.getvalue()


def test_a_finished_job_reaches_its_webhook_signed_and_can_be_replayed(stack, put_image, receiver) -> None:  # type: ignore[no-untyped-def]
    _, base, _ = stack
    # Given a job that names a local receiver as its webhook
    uri = put_image(data=_jpeg())
    resp = requests.post(f"{base}/v1/jobs", json={"image": uri, "texts": ["a green field"],
                                                  "metadata": {"ticket": "T-1"},
                                                  "webhook_url": receiver.url("/hooks/cv")}, timeout=10)
    assert resp.status_code == 202, resp.text
    job_id = resp.json()["id"]
    doc = wait_job(base, job_id)
    assert doc["status"] == "succeeded", doc

    # Then the receiver gets one job.succeeded event, signed with the configured secret
    wait_for(lambda: receiver.count >= 1, timeout=30, what="the webhook")
    first = receiver.requests[0]
    event = Webhook(SECRET).verify(first.body, first.headers)
    assert event["type"] == "job.succeeded"
    assert event["data"]["id"] == job_id and event["data"]["metadata"] == {"ticket": "T-1"}
    assert event["data"]["result"] == doc["result"]
    hook = wait_for(lambda: requests.get(f"{base}/v1/jobs/{job_id}", timeout=5).json()["webhook"]
                    if requests.get(f"{base}/v1/jobs/{job_id}", timeout=5).json()["webhook"]["status"] != "pending"
                    else None, timeout=10, what="the delivery to be recorded")
    assert hook["status"] == "delivered" and hook["attempts"] == 1 and hook["id"] == first.headers["webhook-id"]

    # When it is redelivered through the API
    resp = requests.post(f"{base}/v1/jobs/{job_id}/webhook/redeliver", timeout=10)
    assert resp.status_code == 202, resp.text

    # Then it arrives again with the same webhook-id, and both attempts are listed
    wait_for(lambda: receiver.count >= 2, timeout=30, what="the redelivery")
    second = receiver.requests[1]
    assert Webhook(SECRET).verify(second.body, second.headers) == event
    assert second.headers["webhook-id"] == first.headers["webhook-id"]
    listing = wait_for(lambda: (r := requests.get(f"{base}/v1/jobs/{job_id}/deliveries", timeout=5).json())
                       and len(r["deliveries"]) == 2 and r, timeout=10, what="two delivery records")
    assert [(d["redelivery"], d["outcome"], d["status_code"]) for d in listing["deliveries"]] == [
        (0, "delivered", 200), (1, "delivered", 200)]


def test_a_canceled_job_sends_job_canceled(stack, put_image, receiver) -> None:  # type: ignore[no-untyped-def]
    _, base, verify_worker = stack
    # Given a job (on a good image) submitted while the verify worker is frozen, so it cannot start
    uri = put_image(data=_jpeg())
    with verify_worker.paused():
        job = requests.post(f"{base}/v1/jobs", json={"image": uri, "text": "x", "webhook_url": receiver.url()},
                            timeout=10).json()
        # When it is canceled before it runs
        resp = requests.delete(f"{base}/v1/jobs/{job['id']}", timeout=10)
        assert resp.status_code == 200, resp.text
    # Then it stays canceled and one job.canceled event is sent
    doc = wait_job(base, job["id"])
    assert doc["status"] == "canceled", doc
    wait_for(lambda: receiver.count >= 1, timeout=30, what="the webhook")
    event = Webhook(SECRET).verify(receiver.requests[0].body, receiver.requests[0].headers)
    assert event["type"] == "job.canceled" and event["data"]["status"] == "canceled"
    assert event["data"]["id"] == job["id"]
    wait_for(lambda: requests.get(f"{base}/v1/jobs/{job['id']}", timeout=5).json()["webhook"]["status"] == "delivered",
             timeout=10, what="the delivery to be recorded")
    assert receiver.count == 1
