"""Tenant isolation: another tenant's job is 404 on every job endpoint, as if it did not exist."""

from __future__ import annotations

import pytest
from flask import Flask
from flask.testing import FlaskClient

VALID = {"image": "s3://photos/cat.jpg", "text": "a cat on a sofa"}


@pytest.fixture()
def tenants(app: Flask, make_key) -> tuple[FlaskClient, FlaskClient]:  # type: ignore[no-untyped-def]
    """Return clients of two tenants, "alpha" and "beta"."""
    clients = []
    for tenant in ("alpha", "beta"):
        client = app.test_client()
        client.environ_base["HTTP_AUTHORIZATION"] = f"Bearer {make_key(tenant)[1]}"
        clients.append(client)
    return clients[0], clients[1]


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("get", "/v1/jobs/{id}"),
        ("delete", "/v1/jobs/{id}"),
        ("get", "/v1/jobs/{id}/deliveries"),
        ("post", "/v1/jobs/{id}/webhook/redeliver"),
    ],
)
def test_other_tenants_job_is_404(app: Flask, tenants, method: str, path: str) -> None:  # type: ignore[no-untyped-def]
    alpha, beta = tenants
    # Given a job of tenant alpha (with a webhook, so the webhook endpoints have something to show)
    job = alpha.post("/v1/jobs", json={**VALID, "webhook_url": "http://127.0.0.1:9/hook"}).get_json()
    # When tenant beta asks for it, it does not exist
    resp = getattr(beta, method)(path.format(id=job["id"]))
    assert resp.status_code == 404
    assert resp.get_json()["error"]["code"] == "job_not_found"
    # And it is untouched for its owner
    assert alpha.get(f"/v1/jobs/{job['id']}").get_json()["status"] == "queued"


def test_listing_shows_only_own_jobs(tenants) -> None:  # type: ignore[no-untyped-def]
    alpha, beta = tenants
    a = {alpha.post("/v1/jobs", json=VALID).get_json()["id"] for _ in range(3)}
    b = {beta.post("/v1/jobs", json=VALID).get_json()["id"]}
    for status in ("", "?status=queued"):
        seen_a = {j["id"] for j in alpha.get(f"/v1/jobs{status}").get_json()["jobs"]}
        seen_b = {j["id"] for j in beta.get(f"/v1/jobs{status}").get_json()["jobs"]}
        assert a <= seen_a and not (b & seen_a)
        assert b <= seen_b and not (a & seen_b)


def test_batch_jobs_belong_to_the_caller(tenants) -> None:  # type: ignore[no-untyped-def]
    alpha, beta = tenants
    ids = [j["id"] for j in alpha.post("/v1/jobs/batch", json={"jobs": [VALID, VALID]}).get_json()["jobs"]]
    assert all(beta.get(f"/v1/jobs/{i}").status_code == 404 for i in ids)
    assert all(alpha.get(f"/v1/jobs/{i}").status_code == 200 for i in ids)


def test_idempotency_keys_are_per_tenant(tenants) -> None:  # type: ignore[no-untyped-def]
    alpha, beta = tenants
    headers = {"Idempotency-Key": "shared-order-1"}
    first = alpha.post("/v1/jobs", json=VALID, headers=headers)
    # The same key from another tenant, even with another body, is another job, not a conflict
    other = beta.post("/v1/jobs", json={**VALID, "text": "a dog"}, headers=headers)
    assert first.status_code == 202 and other.status_code == 202
    assert first.get_json()["id"] != other.get_json()["id"]
    assert alpha.post("/v1/jobs", json=VALID, headers=headers).get_json()["id"] == first.get_json()["id"]
