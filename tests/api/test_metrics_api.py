"""``GET /metrics``: Prometheus text rendered from Redis, with no worker and with real worker processes."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator

import pytest
import redis as redis_lib
import requests
from flask.testing import FlaskClient
from prometheus_client.parser import text_string_to_metric_families

from api.app import create_app
from core import metrics
from core.settings import Settings
from tests.helpers import free_port
from tests.processes import running_api, running_worker, wait_job, worker_settings

P = "caption_verifier_"


def scrape(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Return every sample of a Prometheus text page keyed ``(name, sorted labels)``."""
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def clean_redis(client: redis_lib.Redis) -> None:
    """Forget the metrics, the job indexes and any message other tests left in the queues."""
    keys = [*client.scan_iter(f"{metrics.M}*"), metrics.QUEUED_INDEX, metrics.RUNNING_INDEX]
    for queue in metrics.QUEUES:
        keys += metrics.priority_lists(queue)
    client.delete(*keys)


@pytest.fixture()
def open_client(settings: Settings, redis_client: redis_lib.Redis) -> Iterator[FlaskClient]:
    """A test client of an app with auth off and the real Celery producer, on a clean Redis."""
    clean_redis(redis_client)
    app = create_app(dataclasses.replace(settings, auth_enabled=False))
    yield app.test_client()
    clean_redis(redis_client)


def test_queue_depth_sums_priorities_and_oldest_age_with_no_worker(open_client: FlaskClient, put_image) -> None:  # type: ignore[no-untyped-def]
    # Given three queued jobs, one of them high priority, and no worker
    uri = put_image()
    for priority in ("normal", "high", "normal"):
        resp = open_client.post("/v1/jobs", json={"image": uri, "text": "x", "priority": priority})
        assert resp.status_code == 202, resp.get_json()

    # When Prometheus scrapes
    resp = open_client.get("/metrics")

    # Then the queue depth counts both of kombu's priority lists, and the oldest job has an age
    assert resp.status_code == 200 and resp.mimetype == "text/plain"
    samples = scrape(resp.get_data(as_text=True))
    assert samples[(P + "redis_up", ())] == 1
    assert samples[(P + "queue_messages", (("queue", "verify"),))] == 3
    assert samples[(P + "queue_messages", (("queue", "webhooks"),))] == 0
    assert samples[(P + "jobs_queued", ())] == 3
    assert 0 < samples[(P + "oldest_queued_job_age_seconds", ())] < 60


def test_a_canceled_job_is_counted_once(open_client: FlaskClient, put_image) -> None:  # type: ignore[no-untyped-def]
    job = open_client.post("/v1/jobs", json={"image": put_image(), "text": "x"}).get_json()
    assert open_client.delete(f"/v1/jobs/{job['id']}").status_code == 200
    assert open_client.delete(f"/v1/jobs/{job['id']}").status_code == 409
    samples = scrape(open_client.get("/metrics").get_data(as_text=True))
    assert samples[(P + "jobs_finished_total", (("code", "canceled"), ("status", "canceled")))] == 1
    assert samples[(P + "jobs_queued", ())] == 0
    assert samples[(P + "oldest_queued_job_age_seconds", ())] == 0


def test_redis_down_reports_redis_up_zero(settings: Settings) -> None:
    app = create_app(dataclasses.replace(settings, auth_enabled=False, redis_url=f"redis://127.0.0.1:{free_port()}/0"))
    resp = app.test_client().get("/metrics")
    assert resp.status_code == 200
    assert scrape(resp.get_data(as_text=True)) == {(P + "redis_up", ()): 0}


def test_private_metrics_need_an_operator_key(settings: Settings, redis_client: redis_lib.Redis) -> None:
    from core.keys import KeyStore

    app = create_app(dataclasses.replace(settings, auth_enabled=True, metrics_public=False))
    keys = KeyStore(redis_client)
    _, tenant_key = keys.create("metrics-tenant")
    _, operator_key = keys.create("metrics-ops", scopes=["operator"])
    client = app.test_client()
    assert client.get("/metrics").status_code == 401
    assert client.get("/metrics", headers={"Authorization": f"Bearer {tenant_key}"}).status_code == 403
    assert client.get("/metrics", headers={"Authorization": f"Bearer {operator_key}"}).status_code == 200


@pytest.fixture(scope="module")
def stack(redis_url: str, s3_endpoint: str) -> Iterator[tuple[Settings, str]]:
    """A real worker and a real API (separate processes), sharing only Redis."""
    clean_redis(redis_lib.Redis.from_url(redis_url))
    settings = worker_settings(Settings.from_env(
        {}, redis_url=redis_url, s3_endpoint_url=s3_endpoint, model="random:tiny", batch_max_wait_ms=5,
        auth_enabled=False,
    ))
    with running_worker(settings, name="metrics-worker"), running_api(settings) as base:
        yield settings, base


def test_worker_figures_reach_the_apis_metrics(stack, put_image, bucket) -> None:  # type: ignore[no-untyped-def]
    _, base = stack
    # Given 3 jobs that succeed (2 texts each) and 1 whose image does not exist
    bodies = [{"image": put_image(), "texts": ["a", "b"]} for _ in range(3)]
    bodies.append({"image": f"s3://{bucket}/missing.jpg", "text": "x"})
    ids = [requests.post(f"{base}/v1/jobs", json=b, timeout=10).json()["id"] for b in bodies]
    docs = [wait_job(base, i) for i in ids]
    assert [d["status"] for d in docs] == ["succeeded"] * 3 + ["failed"]

    # When the API (another process) renders /metrics
    samples = scrape(requests.get(f"{base}/metrics", timeout=10).text)

    # Then counters and histogram counts match the jobs exactly
    assert samples[(P + "jobs_finished_total", (("code", ""), ("status", "succeeded")))] == 3
    assert samples[(P + "jobs_finished_total", (("code", "image_not_found"), ("status", "failed")))] == 1
    assert samples[(P + "job_total_seconds_count", ())] == 4
    assert samples[(P + "job_total_seconds_bucket", (("le", "+Inf"),))] == 4
    assert samples[(P + "job_queue_wait_seconds_count", ())] == 4
    for stage in ("image_fetch_seconds", "image_decode_seconds", "inference_seconds"):
        assert samples[(P + stage + "_count", ())] == 3, stage  # the missing image never got past the fetch
    assert samples[(P + "batch_pairs_sum", ())] == 6
    assert samples[(P + "batch_jobs_sum", ())] == 3
    assert samples[(P + "queue_messages", (("queue", "verify"),))] == 0
    assert samples[(P + "jobs_running", ())] == 0

    # And the worker is up, warm, on the CPU
    [(worker, up)] = [(dict(k[1])["worker"], v) for k, v in samples.items() if k[0] == P + "worker_up" and v == 1]
    assert samples[(P + "worker_model_loaded", (("worker", worker),))] == 1
    info = [dict(k[1]) for k in samples if k[0] == P + "worker_info" and dict(k[1])["worker"] == worker]
    assert info and info[0]["device"] == "cpu" and info[0]["dtype"] == "float32" and info[0]["model"] == "random:tiny"
    assert samples[(P + "worker_last_heartbeat_timestamp_seconds", (("worker", worker),))] > 0
