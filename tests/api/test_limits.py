"""Rate limits, quotas and body sizes across two real gunicorn API processes sharing Redis."""

from __future__ import annotations

import socket
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor

import pytest
import redis as redis_lib
import requests

from core.settings import Settings
from tests.processes import running_api

VALID = {"image": "s3://photos/cat.jpg", "text": "a cat on a sofa"}
MakeKey = Callable[..., tuple[str, str]]


@pytest.fixture()
def two_apis(settings: Settings, redis_client: redis_lib.Redis, request: pytest.FixtureRequest) -> Iterator[list[str]]:
    """Run two ``verifier api`` processes on the same Redis, with the settings the test marks."""
    overrides = request.node.get_closest_marker("api_settings")
    limited = Settings(**{**settings.__dict__, **(overrides.kwargs if overrides else {})})
    with running_api(limited) as one, running_api(limited) as two:
        yield [one, two]


def _bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


@pytest.mark.api_settings(rate_limit="6/minute")
def test_rate_limit_holds_across_processes(two_apis: list[str], make_key: MakeKey) -> None:
    # Given one key, and another of the same tenant
    first, second = make_key("acme")[1], make_key("acme")[1]
    # When it sends 6 requests, alternating between the two API processes
    for i in range(6):
        assert requests.get(f"{two_apis[i % 2]}/v1/jobs", headers=_bearer(first), timeout=5).status_code == 200
    # Then the 7th is refused by either process, with Retry-After and the error body
    for base in two_apis:
        resp = requests.get(f"{base}/v1/jobs", headers=_bearer(first), timeout=5)
        assert resp.status_code == 429
        assert resp.json()["error"]["code"] == "rate_limited"
        assert 1 <= int(resp.headers["Retry-After"]) <= 60
    # And another key is counted on its own
    assert requests.get(f"{two_apis[0]}/v1/jobs", headers=_bearer(second), timeout=5).status_code == 200
    # And open endpoints are not rate limited
    assert requests.get(f"{two_apis[1]}/healthz", timeout=5).status_code == 200


@pytest.mark.api_settings(tenant_max_queued=5, rate_limit="1000/second")
def test_quota_holds_across_processes_and_counts_batch_items(two_apis: list[str], make_key: MakeKey) -> None:
    tenant = "quota-" + make_key("x")[0]
    key, other = make_key(tenant)[1], make_key(tenant + "-other")[1]
    # Given 3 queued jobs, submitted through both processes
    for i in range(3):
        assert requests.post(f"{two_apis[i % 2]}/v1/jobs", json=VALID, headers=_bearer(key), timeout=5).status_code == 202
    # When a batch of 3 valid jobs (plus an invalid one) would pass the quota of 5
    batch = {"jobs": [VALID, VALID, VALID, {"image": "nope", "text": "a"}]}
    resp = requests.post(f"{two_apis[0]}/v1/jobs/batch", json=batch, headers=_bearer(key), timeout=5)
    # Then it is refused whole
    assert resp.status_code == 429 and resp.json()["error"]["code"] == "tenant_quota_exceeded"
    assert int(resp.headers["Retry-After"]) >= 1
    # But a batch that fits is taken; the invalid item does not count
    resp = requests.post(f"{two_apis[1]}/v1/jobs/batch", json={"jobs": batch["jobs"][2:]}, headers=_bearer(key),
                         timeout=5)
    assert resp.status_code == 202 and "id" in resp.json()["jobs"][0]
    # Now 4 are queued: 8 concurrent submissions on both processes get exactly one more in
    with ThreadPoolExecutor(8) as pool:
        codes = list(pool.map(lambda i: requests.post(f"{two_apis[i % 2]}/v1/jobs", json=VALID,
                                                      headers=_bearer(key), timeout=10).status_code, range(8)))
    assert sorted(codes) == [202] + [429] * 7
    # Canceling one frees a slot
    job_id = requests.get(f"{two_apis[0]}/v1/jobs?limit=1", headers=_bearer(key), timeout=5).json()["jobs"][0]["id"]
    assert requests.delete(f"{two_apis[0]}/v1/jobs/{job_id}", headers=_bearer(key), timeout=5).status_code == 200
    assert requests.post(f"{two_apis[1]}/v1/jobs", json=VALID, headers=_bearer(key), timeout=5).status_code == 202
    # And another tenant has its own quota
    assert requests.post(f"{two_apis[0]}/v1/jobs", json=VALID, headers=_bearer(other), timeout=5).status_code == 202


@pytest.mark.api_settings(tenant_max_queued=1, rate_limit="1000/second")
def test_idempotent_replay_at_a_full_quota_returns_the_job(two_apis: list[str], make_key: MakeKey) -> None:
    key = make_key("replay-" + make_key("x")[0])[1]
    headers = {**_bearer(key), "Idempotency-Key": "post-1"}
    # Given a tenant whose one queued job fills its quota
    first = requests.post(f"{two_apis[0]}/v1/jobs", json=VALID, headers=headers, timeout=5)
    assert first.status_code == 202
    # When the client retries the same request (say its first answer was lost)
    again = requests.post(f"{two_apis[1]}/v1/jobs", json=VALID, headers=headers, timeout=5)
    # Then it gets the job it created, not a 429
    assert again.status_code == 200 and again.json()["id"] == first.json()["id"]
    # While a new job is still over the quota
    other = requests.post(f"{two_apis[1]}/v1/jobs", json=VALID, headers=_bearer(key), timeout=5)
    assert other.status_code == 429 and other.json()["error"]["code"] == "tenant_quota_exceeded"


def _raw_post(base: str, head: bytes, body_chunks: list[bytes]) -> tuple[int, bytes]:
    host, port = base.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        sock.sendall(head)
        for chunk in body_chunks:
            try:
                sock.sendall(chunk)
            except OSError:  # the server may answer and close before reading it all
                break
        data = b""
        while b"\r\n\r\n" not in data or len(data) < 200:
            part = sock.recv(65536)
            if not part:
                break
            data += part
    return int(data.split(b" ", 2)[1]), data


@pytest.mark.api_settings(max_request_bytes=2000)
def test_bodies_over_the_limit_are_413_chunked_or_not(two_apis: list[str], api_key: str) -> None:
    base = two_apis[0]
    big = b'{"image": "s3://photos/a.jpg", "text": "a", "metadata": {"pad": "' + b"x" * 5000 + b'"}}'
    # With a Content-Length
    resp = requests.post(f"{base}/v1/jobs", data=big, headers={**_bearer(api_key), "Content-Type": "application/json"},
                         timeout=5)
    assert resp.status_code == 413 and resp.json()["error"]["code"] == "payload_too_large"
    # Chunked, with no Content-Length: counted as it streams in
    head = (f"POST /v1/jobs HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {api_key}\r\n"
            "Content-Type: application/json\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n").encode()
    chunks = [b"%x\r\n%s\r\n" % (len(big[i:i + 500]), big[i:i + 500]) for i in range(0, len(big), 500)] + [b"0\r\n\r\n"]
    status, raw = _raw_post(base, head, chunks)
    assert status == 413, raw[:500]
    assert b"payload_too_large" in raw
    # A small chunked body is fine
    small = b'{"image": "s3://photos/a.jpg", "text": "a"}'
    status, raw = _raw_post(base, head, [b"%x\r\n%s\r\n" % (len(small), small), b"0\r\n\r\n"])
    assert status == 202, raw[:500]
