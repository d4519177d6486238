"""``GET /v1/stats``: the dashboard's data, from figures recorded in a real Redis."""

from __future__ import annotations

import dataclasses
import json
import time
from collections.abc import Iterator

import pytest
import redis as redis_lib
from flask.testing import FlaskClient

from api.app import create_app
from core import metrics
from core.jobs import Status
from core.keys import ALL_BUCKETS, KeyStore
from core.settings import Settings
from core.workers import worker_key, write_heartbeat
from tests.api.test_metrics_api import clean_redis
from tests.core.test_metrics import finished_job
from tests.helpers import free_port


@pytest.fixture()
def r(redis_client: redis_lib.Redis) -> Iterator[redis_lib.Redis]:
    clean_redis(redis_client)
    redis_client.delete("cv:workers", *redis_client.scan_iter("cv:worker:*"))
    yield redis_client
    clean_redis(redis_client)


@pytest.fixture()
def client(settings: Settings, r: redis_lib.Redis) -> FlaskClient:
    return create_app(dataclasses.replace(settings, auth_enabled=False)).test_client()


def test_stats_of_a_quiet_system(client: FlaskClient) -> None:
    resp = client.get("/v1/stats")
    assert resp.status_code == 200 and resp.headers["Cache-Control"] == "no-store"
    stats = resp.get_json()
    assert stats["state"] == "no_workers"
    assert stats["window_minutes"] == 15 and len(stats["throughput"]) == 15
    assert stats["totals"] == {"succeeded": 0, "failed": 0, "canceled": 0}
    assert stats["latency"] == {"p50": None, "p95": None, "p99": None, "count": 0}
    assert stats["queues"] == {"depths": {"verify": 0, "webhooks": 0}, "queued_jobs": 0, "running_jobs": 0,
                               "oldest_queued_age_seconds": None}
    assert stats["workers"] == {"alive": 0, "warm": 0, "list": []}
    assert stats["failures"] == [] and stats["webhooks"]["failed"] == 0


def test_stats_after_jobs_workers_and_webhooks(client: FlaskClient, r: redis_lib.Redis) -> None:
    # Given jobs that finished over the last two minutes, a warm worker, and webhook attempts
    now = time.time()
    for total in (0.1, 0.2, 0.3, 0.4):
        metrics.record_job(r, finished_job(Status.SUCCEEDED, created=now - total, started=now - total / 2,
                                           finished=now), now=now)
    metrics.record_job(r, finished_job(Status.SUCCEEDED, created=now - 62, started=now - 61, finished=now - 60),
                       now=now - 60)
    failed = [finished_job(Status.FAILED, created=now - 1, started=now - 1, finished=now, code=code)
              for code in ("image_not_found", "image_invalid", "image_not_found")]
    for job in failed:
        metrics.record_job(r, job, now=now)
    metrics.record_webhook(r, "delivered", job_id="j1", now=now)
    metrics.record_webhook(r, "failed", job_id="j2", error="gave up", now=now)
    write_heartbeat(r, "host:1:abc", {"model_loaded": True, "device": "cpu", "dtype": "float32", "model": "m",
                                      "queues": ["verify"]}, ttl=30)

    # When the dashboard asks
    stats = client.get("/v1/stats?window=5").get_json()

    # Then the totals, the per-minute rows and the failures agree with what was recorded
    assert stats["state"] == "ok" and len(stats["throughput"]) == 5
    assert stats["totals"] == {"succeeded": 5, "failed": 3, "canceled": 0}
    last, previous = stats["throughput"][-1], stats["throughput"][-2]
    assert (last["succeeded"], last["failed"], previous["succeeded"]) == (4, 3, 1)
    assert sum(row["succeeded"] for row in stats["throughput"]) == 5
    latency = stats["latency"]
    assert latency["count"] == 5
    assert 0.15 < latency["p50"] < 0.36 and 1.6 < latency["p99"] < 2.5  # 0.1-0.4 s and one of 2 s
    assert [(g["code"], g["count"]) for g in stats["failures"]] == [("image_not_found", 2), ("image_invalid", 1)]
    assert [j["id"] for j in stats["failures"][0]["latest"]] == [failed[2].id, failed[0].id]
    assert stats["webhooks"]["failed"] == 1 and stats["webhooks"]["outcomes"] == {"delivered": 1, "failed": 1}
    assert stats["webhooks"]["recent_failures"][0]["job_id"] == "j2"
    [worker] = stats["workers"]["list"]
    assert worker["name"] == "host:1:abc" and worker["alive"] and worker["model_loaded"] and worker["device"] == "cpu"
    assert stats["workers"]["warm"] == 1

    # And a worker whose heartbeat expired shows as down, and the state says so
    r.delete(worker_key("host:1:abc"))
    stats = client.get("/v1/stats?window=5").get_json()
    assert stats["state"] == "no_workers" and stats["workers"]["list"][0]["alive"] is False


def test_recent_failures_outside_the_window_are_left_out(client: FlaskClient, r: redis_lib.Redis) -> None:
    now = time.time()
    old = finished_job(Status.FAILED, created=now - 900, started=now - 900, finished=now - 899, code="expired")
    metrics.record_job(r, old, now=now - 899)
    stats = client.get("/v1/stats?window=5").get_json()
    assert stats["failures"] == []
    assert json.loads(r.lindex(f"{metrics.M}failures", 0))["id"] == old.id


@pytest.mark.parametrize("window", ["0", "61", "abc", "-1", "1.5"])
def test_window_is_validated(client: FlaskClient, window: str) -> None:
    resp = client.get(f"/v1/stats?window={window}")
    assert resp.status_code == 422 and resp.get_json()["error"]["code"] == "invalid_window"


def test_stats_need_an_operator_key(settings: Settings, r: redis_lib.Redis) -> None:
    client = create_app(dataclasses.replace(settings, auth_enabled=True)).test_client()
    keys = KeyStore(r)
    _, tenant_key = keys.create("stats-tenant", buckets=[ALL_BUCKETS])
    _, operator_key = keys.create("stats-ops", scopes=["operator"])
    assert client.get("/v1/stats").status_code == 401
    resp = client.get("/v1/stats", headers={"Authorization": f"Bearer {tenant_key}"})
    assert resp.status_code == 403 and resp.get_json()["error"]["code"] == "missing_scope"
    assert client.get("/v1/stats", headers={"Authorization": f"Bearer {operator_key}"}).status_code == 200


def test_redis_down_answers_503_with_the_error_body(settings: Settings) -> None:
    down = dataclasses.replace(settings, auth_enabled=False, redis_url=f"redis://127.0.0.1:{free_port()}/0")
    resp = create_app(down).test_client().get("/v1/stats")
    assert resp.status_code == 503
    assert resp.get_json()["error"]["code"] == "redis_unavailable"


def test_dashboard_page_and_assets_are_served(client: FlaskClient) -> None:
    page = client.get("/dashboard")
    assert page.status_code == 200 and page.mimetype == "text/html"
    html = page.get_data(as_text=True)
    page.close()
    for asset in ("/dashboard/static/dashboard.js", "/dashboard/static/dashboard.css"):
        assert asset in html
        resp = client.get(asset)
        assert resp.status_code == 200
        resp.close()
