"""API keys on the HTTP API: 401s, open endpoints, scopes, bucket grants."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from flask import Flask

from api.app import create_app
from core.keys import KeyStore
from core.settings import Settings

VALID = {"image": "s3://photos/acme/cat.jpg", "text": "a cat"}
MakeKey = Callable[..., tuple[str, str]]


def _bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


@pytest.mark.parametrize(
    ("headers", "code"),
    [
        ({}, "missing_api_key"),
        ({"Authorization": "Bearer"}, "invalid_api_key"),
        ({"Authorization": "Basic dXNlcjpwYXNz"}, "invalid_api_key"),
        ({"Authorization": "Bearer not-a-key"}, "invalid_api_key"),
        ({"Authorization": "Bearer cvk_0123456789ab_" + "A" * 43}, "invalid_api_key"),
    ],
)
@pytest.mark.parametrize(("method", "path"), [("post", "/v1/jobs"), ("get", "/v1/jobs"), ("get", "/v1/jobs/x"),
                                              ("delete", "/v1/jobs/x"), ("post", "/v1/jobs/batch"),
                                              ("get", "/v1/nothing-here")])
def test_v1_needs_a_valid_key(app: Flask, headers: dict[str, str], code: str, method: str, path: str) -> None:
    resp = getattr(app.test_client(), method)(path, headers=headers, json=VALID)
    assert resp.status_code == 401
    body = resp.get_json()
    assert set(body) == {"error"} and set(body["error"]) == {"code", "message"}
    assert body["error"]["code"] == code
    assert isinstance(body["error"]["message"], str) and body["error"]["message"].strip()
    assert resp.headers["WWW-Authenticate"].startswith("Bearer")


def test_revoked_key_is_401(app: Flask, make_key: MakeKey, redis_client) -> None:  # type: ignore[no-untyped-def]
    key_id, clear = make_key("acme", buckets=("photos",))
    client = app.test_client()
    assert client.post("/v1/jobs", json=VALID, headers=_bearer(clear)).status_code == 202
    KeyStore(redis_client).revoke(key_id)
    resp = client.get("/v1/jobs", headers=_bearer(clear))
    assert resp.status_code == 401 and resp.get_json()["error"]["code"] == "revoked_api_key"


@pytest.mark.parametrize("path", ["/healthz", "/readyz", "/openapi.json", "/metrics", "/dashboard"])
def test_open_endpoints_need_no_key(app: Flask, path: str) -> None:
    assert app.test_client().get(path).status_code in (200, 503)


def test_metrics_need_an_operator_key_when_not_public(settings: Settings, make_key: MakeKey) -> None:
    app = create_app(Settings.from_env({}, **{**settings.__dict__, "metrics_public": False}))
    client = app.test_client()
    assert client.get("/metrics").status_code == 401
    assert client.get("/metrics", headers=_bearer(make_key("acme", scopes=())[1])).status_code == 403
    assert client.get("/metrics", headers=_bearer(make_key("ops", scopes=("operator",))[1])).status_code == 200


def test_stats_need_the_operator_scope(app: Flask, make_key: MakeKey) -> None:
    client = app.test_client()
    assert client.get("/v1/stats").status_code == 401
    assert client.get("/v1/stats", headers=_bearer(make_key("acme", scopes=())[1])).status_code == 403
    assert client.get("/v1/stats", headers=_bearer(make_key("ops", scopes=("operator",))[1])).status_code == 200


def test_auth_disabled_makes_everyone_the_default_tenant(settings: Settings) -> None:
    app = create_app(Settings.from_env({}, **{**settings.__dict__, "auth_enabled": False}))
    resp = app.test_client().post("/v1/jobs", json={"image": "s3://any-bucket/x.jpg", "text": "a"})
    assert resp.status_code == 202


# --- bucket grants -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("grants", "image", "status"),
    [
        (("photos/acme/",), "s3://photos/acme/cat.jpg", 202),
        (("photos/acme/",), "s3://photos/other/cat.jpg", 403),
        (("photos/acme/",), "s3://photos/acme/../other/cat.jpg", 403),
        (("photos/acme/",), "s3://private-bucket/acme/cat.jpg", 403),
        (("photos",), "s3://photos/anything/at/all.jpg", 202),
        (("*",), "s3://private-bucket/x.jpg", 202),
        ((), "s3://photos/acme/cat.jpg", 403),  # no grant: nothing
    ],
)
def test_bucket_grants_at_submission(app: Flask, make_key: MakeKey, grants: tuple[str, ...], image: str,
                                     status: int) -> None:
    _, clear = make_key("acme", buckets=grants)
    resp = app.test_client().post("/v1/jobs", json={"image": image, "text": "a cat"}, headers=_bearer(clear))
    assert resp.status_code == status, resp.get_json()
    if status == 403:
        assert resp.get_json()["error"]["code"] == "bucket_not_allowed"


def test_batch_refuses_ungranted_items_alone(app: Flask, make_key: MakeKey) -> None:
    _, clear = make_key("acme", buckets=("photos/acme/",))
    items = [VALID, {"image": "s3://photos/other/x.jpg", "text": "a"}, {"image": "bad", "text": "a"}]
    resp = app.test_client().post("/v1/jobs/batch", json={"jobs": items}, headers=_bearer(clear))
    assert resp.status_code == 202
    got = resp.get_json()["jobs"]
    assert got[0]["status"] == "queued"
    assert got[1]["error"]["code"] == "bucket_not_allowed"
    assert got[2]["error"]["code"] == "invalid_image_uri"
