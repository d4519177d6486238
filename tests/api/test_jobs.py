"""The /v1/jobs contract against a real Redis (no worker: jobs stay queued)."""

from __future__ import annotations

import pytest
import redis as redis_lib
from flask.testing import FlaskClient

from api.app import create_app
from core.metrics import queue_depths
from core.names import VERIFY_QUEUE
from core.settings import Settings
from tests.helpers import free_port

VALID = {"image": "s3://photos/cat.jpg", "text": "a cat on a sofa"}


def _error(resp) -> dict:  # type: ignore[no-untyped-def]
    body = resp.get_json()
    assert set(body) == {"error"}, body
    assert set(body["error"]) >= {"code", "message"}
    return body["error"]


def test_create_returns_queued_job_document(client: FlaskClient, redis_client: redis_lib.Redis) -> None:
    before = queue_depths(redis_client, [VERIFY_QUEUE])[VERIFY_QUEUE]
    resp = client.post("/v1/jobs", json={**VALID, "metadata": {"post": 42}, "threshold": 0.7, "mode": "itc"})
    assert resp.status_code == 202
    doc = resp.get_json()
    assert doc["status"] == "queued"
    assert doc["texts"] == ["a cat on a sofa"]
    assert doc["threshold"] == 0.7 and doc["mode"] == "itc"
    assert doc["metadata"] == {"post": 42}
    assert doc["attempts"] == 0 and doc["result"] is None
    assert "tenant" not in doc and "request_hash" not in doc
    # The verify task went onto the broker.
    assert queue_depths(redis_client, [VERIFY_QUEUE])[VERIFY_QUEUE] == before + 1
    got = client.get(f"/v1/jobs/{doc['id']}")
    assert got.status_code == 200 and got.get_json() == doc


def test_default_threshold_comes_from_settings(settings: Settings, auth_headers: dict[str, str]) -> None:
    app = create_app(Settings.from_env({}, **{**settings.__dict__, "default_threshold": 0.25}))
    doc = app.test_client().post("/v1/jobs", json=VALID, headers=auth_headers).get_json()
    assert doc["threshold"] == 0.25


LONG = "x" * 1001


@pytest.mark.parametrize(
    ("body", "status", "code"),
    [
        ({"text": "a"}, 422, "missing_field"),
        ({"image": "s3://photos/a.jpg"}, 422, "text_or_texts_required"),
        ({**VALID, "texts": ["b"]}, 422, "text_or_texts_required"),
        ({**VALID, "extra": 1}, 422, "unknown_field"),
        ({"image": "http://example.com/a.jpg", "text": "a"}, 422, "invalid_image_uri"),
        ({"image": "s3://Bad_Bucket/a.jpg", "text": "a"}, 422, "invalid_bucket_name"),
        ({"image": "s3://photos/", "text": "a"}, 422, "invalid_object_key"),
        ({"image": 5, "text": "a"}, 422, "invalid_image"),
        ({"image": "s3://photos/a.jpg", "text": ""}, 422, "invalid_text"),
        ({"image": "s3://photos/a.jpg", "text": "   "}, 422, "invalid_text"),
        ({"image": "s3://photos/a.jpg", "text": LONG}, 422, "invalid_text"),
        ({"image": "s3://photos/a.jpg", "text": "a\x00b"}, 422, "invalid_text"),
        ({"image": "s3://photos/a.jpg", "texts": []}, 422, "invalid_texts"),
        ({"image": "s3://photos/a.jpg", "texts": ["a"] * 33}, 422, "invalid_texts"),
        ({"image": "s3://photos/a.jpg", "texts": ["a", 3]}, 422, "invalid_texts"),
        ({"image": "s3://photos/a.jpg", "texts": "a"}, 422, "invalid_texts"),
        ({**VALID, "threshold": 1.5}, 422, "invalid_threshold"),
        ({**VALID, "threshold": -0.1}, 422, "invalid_threshold"),
        ({**VALID, "threshold": "0.5"}, 422, "invalid_threshold"),
        ({**VALID, "threshold": True}, 422, "invalid_threshold"),
        ({**VALID, "mode": "clip"}, 422, "invalid_mode"),
        ({**VALID, "metadata": [1]}, 422, "invalid_metadata"),
        ({**VALID, "metadata": {"k": "v" * 5000}}, 422, "invalid_metadata"),
        ({**VALID, "webhook_url": "ftp://example.com/hook"}, 422, "invalid_webhook_url"),
        ({**VALID, "priority": "urgent"}, 422, "invalid_priority"),
        ({**VALID, "deadline": "tomorrow"}, 422, "invalid_deadline"),
    ],
)
def test_validation_errors(client: FlaskClient, body: dict, status: int, code: str) -> None:
    resp = client.post("/v1/jobs", json=body)
    assert resp.status_code == status, resp.get_json()
    assert _error(resp)["code"] == code


@pytest.mark.parametrize(
    ("raw", "content_type", "code"),
    [
        (b"{not json", "application/json", "malformed_json"),
        (b"[1, 2]", "application/json", "malformed_request"),
        (b'{"threshold": NaN, "image": "s3://a/b", "text": "x"}', "application/json", "malformed_json"),
        (b"image=s3://a/b", "application/x-www-form-urlencoded", "unsupported_media_type"),
    ],
)
def test_malformed_bodies(client: FlaskClient, raw: bytes, content_type: str, code: str) -> None:
    resp = client.post("/v1/jobs", data=raw, content_type=content_type)
    assert resp.status_code == 400
    assert _error(resp)["code"] == code


def test_body_over_limit_is_413(settings: Settings, auth_headers: dict[str, str]) -> None:
    app = create_app(Settings.from_env({}, **{**settings.__dict__, "max_request_bytes": 2000}))
    resp = app.test_client().post("/v1/jobs", json={**VALID, "metadata": {"pad": "x" * 3000}}, headers=auth_headers)
    assert resp.status_code == 413
    assert _error(resp)["code"] == "payload_too_large"


def test_unknown_route_and_method_have_error_bodies(client: FlaskClient) -> None:
    assert _error(client.get("/v1/nope"))["code"] == "not_found"
    resp = client.put("/v1/jobs")
    assert resp.status_code == 405 and _error(resp)["code"] == "method_not_allowed"


def test_unknown_job_is_404(client: FlaskClient) -> None:
    for resp in (client.get("/v1/jobs/doesnotexist"), client.delete("/v1/jobs/doesnotexist")):
        assert resp.status_code == 404
        assert _error(resp)["code"] == "job_not_found"


def test_idempotency_key_replays_and_conflicts(client: FlaskClient) -> None:
    headers = {"Idempotency-Key": "order-123"}
    first = client.post("/v1/jobs", json=VALID, headers=headers)
    again = client.post("/v1/jobs", json=VALID, headers=headers)
    assert first.status_code == 202 and again.status_code == 200
    assert again.get_json()["id"] == first.get_json()["id"]
    other = client.post("/v1/jobs", json={**VALID, "text": "a dog"}, headers=headers)
    assert other.status_code == 409 and _error(other)["code"] == "idempotency_key_reused"
    # A different key is a different job.
    fresh = client.post("/v1/jobs", json=VALID, headers={"Idempotency-Key": "order-124"})
    assert fresh.status_code == 202 and fresh.get_json()["id"] != first.get_json()["id"]


def test_cancel_queued_job_then_conflict(client: FlaskClient) -> None:
    job = client.post("/v1/jobs", json=VALID).get_json()
    resp = client.delete(f"/v1/jobs/{job['id']}")
    assert resp.status_code == 200
    doc = resp.get_json()
    assert doc["status"] == "canceled" and doc["error"]["code"] == "canceled" and doc["finished_at"]
    again = client.delete(f"/v1/jobs/{job['id']}")
    assert again.status_code == 409 and _error(again)["code"] == "job_finished"


def test_listing_newest_first_with_status_filter_and_cursor(client: FlaskClient) -> None:
    ids = [client.post("/v1/jobs", json={**VALID, "text": f"caption {i}"}).get_json()["id"] for i in range(7)]
    client.delete(f"/v1/jobs/{ids[2]}")
    seen: list[str] = []
    cursor = None
    while True:
        query = "/v1/jobs?limit=3" + (f"&cursor={cursor}" if cursor else "")
        page = client.get(query).get_json()
        assert len(page["jobs"]) <= 3
        seen.extend(j["id"] for j in page["jobs"])
        cursor = page["next_cursor"]
        if cursor is None:
            break
    mine = [i for i in seen if i in ids]
    assert mine == list(reversed(ids))
    canceled = client.get("/v1/jobs?status=canceled&limit=1000").get_json()["jobs"]
    assert ids[2] in [j["id"] for j in canceled] and all(j["status"] == "canceled" for j in canceled)
    queued = [j["id"] for j in client.get("/v1/jobs?status=queued&limit=1000").get_json()["jobs"]]
    assert ids[2] not in queued and ids[3] in queued


@pytest.mark.parametrize(
    ("query", "status", "code"),
    [
        ("status=done", 422, "invalid_status"),
        ("limit=0", 422, "invalid_limit"),
        ("limit=abc", 422, "invalid_limit"),
        ("limit=5000", 422, "invalid_limit"),
        ("cursor=%%%", 400, "invalid_cursor"),
    ],
)
def test_listing_bad_parameters(client: FlaskClient, query: str, status: int, code: str) -> None:
    resp = client.get(f"/v1/jobs?{query}")
    assert resp.status_code == status
    assert _error(resp)["code"] == code


def test_batch_endpoint_reports_each_item(client: FlaskClient) -> None:
    resp = client.post("/v1/jobs/batch", json={"jobs": [VALID, {"image": "nope", "text": "x"}, {**VALID, "texts": ["a", "b"], "text": None}]})
    assert resp.status_code == 202
    items = resp.get_json()["jobs"]
    assert len(items) == 3
    assert items[0]["status"] == "queued"
    assert items[1]["error"]["code"] == "invalid_image_uri"
    assert items[2]["status"] == "queued" and items[2]["texts"] == ["a", "b"]


def test_redis_down_gives_503_not_a_stack_trace(settings: Settings) -> None:
    dead = f"redis://127.0.0.1:{free_port()}/0"
    app = create_app(Settings.from_env({}, **{**settings.__dict__, "redis_url": dead}))
    client = app.test_client()
    # Any well-formed key: looking it up needs Redis, which is down.
    client.environ_base["HTTP_AUTHORIZATION"] = "Bearer cvk_000000000000_" + "A" * 43
    resp = client.post("/v1/jobs", json=VALID)
    assert resp.status_code == 503
    assert _error(resp)["code"] in {"redis_unavailable", "queue_unavailable"}
    assert resp.headers["Retry-After"]
    assert client.get("/v1/jobs/abc").status_code == 503
    ready = client.get("/readyz")
    assert ready.status_code == 503 and ready.get_json()["checks"]["redis"] == "unreachable"
    assert client.get("/healthz").status_code == 200


def test_readyz_needs_a_warm_worker(client: FlaskClient, redis_client: redis_lib.Redis) -> None:
    from core.workers import write_heartbeat

    redis_client.delete("cv:workers")
    for key in redis_client.keys("cv:worker:*"):
        redis_client.delete(key)
    resp = client.get("/readyz")
    assert resp.status_code == 503 and resp.get_json()["error"]["code"] == "no_warm_worker"
    write_heartbeat(redis_client, "w1", {"model_loaded": True}, ttl=5)
    resp = client.get("/readyz")
    assert resp.status_code == 200, resp.get_json()
    assert resp.get_json()["checks"]["warm_workers"] == 1
    redis_client.delete("cv:worker:w1")
    assert client.get("/readyz").get_json()["status"] == "not_ready"
