"""End to end: HTTP submit → Redis → a real Celery worker (random:tiny BLIP) → poll."""

from __future__ import annotations

import io
from collections.abc import Iterator

import pytest
import redis as redis_lib
import requests
from PIL import Image

from core.s3uri import parse_s3_uri
from core.settings import Settings
from tests.processes import Proc, running_api, running_worker, wait_job, worker_settings


@pytest.fixture(scope="module")
def stack(redis_url: str, s3_endpoint: str) -> Iterator[tuple[Settings, str, Proc]]:
    """One worker and one API for the module, on a freshly emptied Redis database; yield the worker too."""
    redis_lib.Redis.from_url(redis_url).flushdb()
    settings = worker_settings(Settings.from_env(
        {}, redis_url=redis_url, s3_endpoint_url=s3_endpoint, model="random:tiny", batch_max_wait_ms=5,
        auth_enabled=False,  # auth is not what these tests are about (tests/api/test_auth.py)
    ))
    with running_worker(settings, name="e2e-worker") as worker, running_api(settings) as base:
        yield settings, base, worker


def _jpeg(size: tuple[int, int], color: tuple[int, int, int]) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", size, color).save(buf, format="JPEG")
    return buf.getvalue()


def test_submit_poll_succeeds_with_per_text_scores(stack, put_image, s3_client) -> None:  # type: ignore[no-untyped-def]
    settings, base, _ = stack
    uri = put_image(data=_jpeg((320, 240), (10, 120, 200)))
    texts = ["a blue square", "a red car parked on a street", "sky"]
    resp = requests.post(f"{base}/v1/jobs", json={"image": uri, "texts": texts, "threshold": 0.5,
                                                  "metadata": {"post_id": 7}}, timeout=10)
    assert resp.status_code == 202, resp.text
    doc = wait_job(base, resp.json()["id"])
    assert doc["status"] == "succeeded", doc
    result = doc["result"]
    assert [s["text"] for s in result["scores"]] == texts
    for score in result["scores"]:
        assert 0.0 <= score["match_probability"] <= 1.0
        assert -1.0 <= score["cosine_similarity"] <= 1.0
        assert score["match"] == (score["match_probability"] >= 0.5)
    assert result["match"] == all(s["match"] for s in result["scores"])
    bucket, key = parse_s3_uri(uri)
    etag = s3_client.head_object(Bucket=bucket, Key=key)["ETag"].strip('"')
    assert result["image"] == {"etag": etag, "width": 320, "height": 240}
    assert result["model"]["name"] == "random:tiny"
    assert doc["metadata"] == {"post_id": 7} and doc["attempts"] == 1
    assert doc["started_at"] and doc["finished_at"] and doc["error"] is None


def test_itc_mode_thresholds_the_cosine(stack, put_image) -> None:  # type: ignore[no-untyped-def]
    _, base, _ = stack
    uri = put_image(data=_jpeg((64, 64), (200, 200, 20)))
    job = requests.post(f"{base}/v1/jobs", json={"image": uri, "text": "a yellow tile", "mode": "itc",
                                                 "threshold": 0.0}, timeout=10).json()
    doc = wait_job(base, job["id"])
    [score] = doc["result"]["scores"]
    assert score["match"] == (score["cosine_similarity"] >= 0.0)


@pytest.mark.parametrize(
    ("make", "code"),
    [
        (lambda put, bucket: f"s3://{bucket}/missing.jpg", "image_not_found"),
        (lambda put, bucket: put(data=b"this is not an image"), "image_invalid"),
        (lambda put, bucket: put(data=_jpeg((64, 64), (1, 2, 3))[:300]), "image_invalid"),
        (lambda put, bucket: "s3://no-such-bucket-here/a.jpg", "image_not_found"),
    ],
)
def test_bad_images_fail_the_job_with_a_code(stack, put_image, bucket, make, code) -> None:  # type: ignore[no-untyped-def]
    _, base, _ = stack
    uri = make(put_image, bucket)
    job = requests.post(f"{base}/v1/jobs", json={"image": uri, "text": "x"}, timeout=10).json()
    doc = wait_job(base, job["id"])
    assert doc["status"] == "failed" and doc["error"]["code"] == code, doc
    assert doc["result"] is None


def test_concurrent_jobs_each_get_their_own_result(stack, put_image) -> None:  # type: ignore[no-untyped-def]
    _, base, _ = stack
    colors = [(255, 0, 0), (0, 255, 0), (0, 0, 255), (255, 255, 0), (0, 255, 255), (255, 0, 255)]
    uris = [put_image(data=_jpeg((96, 96), c)) for c in colors]
    ids = [requests.post(f"{base}/v1/jobs", json={"image": u, "texts": ["a", "b c"]}, timeout=10).json()["id"]
           for u in uris]
    docs = [wait_job(base, i) for i in ids]
    assert all(d["status"] == "succeeded" for d in docs)
    probs = {round(d["result"]["scores"][0]["match_probability"], 6) for d in docs}
    assert len(probs) > 1, "different images must give different scores"
    assert [d["image"] for d in docs] == uris


def test_cancel_before_it_runs(stack, put_image) -> None:  # type: ignore[no-untyped-def]
    _, base, worker = stack
    uri = put_image(data=_jpeg((64, 64), (40, 40, 40)))  # a good image: a job that ran would succeed
    # Given a job submitted while the only worker is frozen, so it cannot start
    with worker.paused():
        job = requests.post(f"{base}/v1/jobs", json={"image": uri, "text": "x"}, timeout=10).json()
        assert job["status"] == "queued"
        # When it is canceled before it runs
        resp = requests.delete(f"{base}/v1/jobs/{job['id']}", timeout=10)
        assert resp.status_code == 200, resp.text
        assert resp.json()["status"] == "canceled"
    # Then, once the worker runs again and has taken the queue past it, the job stays canceled, never started
    later = requests.post(f"{base}/v1/jobs", json={"image": uri, "text": "y"}, timeout=10).json()
    assert wait_job(base, later["id"])["status"] == "succeeded"
    doc = requests.get(f"{base}/v1/jobs/{job['id']}", timeout=5).json()
    assert doc["status"] == "canceled" and doc["error"]["code"] == "canceled", doc
    assert doc["attempts"] == 0 and doc["started_at"] is None and doc["result"] is None
