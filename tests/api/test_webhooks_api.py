"""The webhook side of the API: the SSRF guard at submission, deliveries, redelivery, cancel."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import pytest
import redis as redis_lib
from flask.testing import FlaskClient

from api.app import create_app
from core.deliveries import DUE_KEY, DeliveryLog
from core.jobs import Job, WebhookState
from core.settings import Settings
from core.store import JobStore

VALID = {"image": "s3://bucket/cat.jpg", "text": "a cat"}


class RecordingEnqueuer:
    """Stands in for the broker: records what the API enqueues."""

    def __init__(self) -> None:
        self.verified: list[str] = []
        self.webhooks: list[str] = []

    def verify(self, job_id: str, *, priority: str = "normal") -> None:
        self.verified.append(job_id)

    def webhook(self, job_id: str) -> None:
        self.webhooks.append(job_id)


@dataclasses.dataclass
class Api:
    client: FlaskClient
    enqueuer: RecordingEnqueuer
    store: JobStore
    deliveries: DeliveryLog


@pytest.fixture()
def make_api(settings: Settings, redis_client: redis_lib.Redis) -> Callable[..., Api]:
    def make(**overrides: object) -> Api:
        enqueuer = RecordingEnqueuer()
        # Auth off: every caller is the "default" tenant; jobs stored for another tenant
        # stand for someone else's (keys and tenants are tested with the auth module).
        opts: dict[str, object] = {"auth_enabled": False, **overrides}
        app = create_app(dataclasses.replace(settings, **opts), enqueuer=enqueuer)  # type: ignore[arg-type]
        app.config["TESTING"] = True
        store = JobStore(redis_client, result_ttl_seconds=settings.result_ttl_seconds)
        return Api(app.test_client(), enqueuer, store, DeliveryLog(redis_client, ttl_seconds=600))

    return make


@pytest.fixture()
def api(make_api: Callable[..., Api]) -> Api:
    return make_api()


def _finished_job(store: JobStore, *, webhook: str | None = "http://127.0.0.1:9/hook", tenant: str | None = None,
                  finish: bool = True) -> Job:
    job = Job(image="s3://bucket/cat.jpg", texts=["a cat"], threshold=0.5,
              webhook=WebhookState(url=webhook) if webhook else None)
    if tenant is not None:
        job.tenant = tenant
    else:
        job.tenant = "default"
    store.create(job)
    if finish:
        store.cancel(job.id)
    return store.require(job.id)


@pytest.mark.parametrize(
    "url",
    [
        "http://10.0.0.1/hook",
        "http://172.16.5.4/hook",
        "http://192.168.0.10/hook",
        "http://169.254.169.254/latest/meta-data/",
        "http://100.64.0.1/hook",
        "http://0.0.0.0/hook",
        "http://224.0.0.251/hook",
        "http://240.0.0.1/hook",
        "http://[::1]/hook",
        "http://[fd00::1]/hook",
        "http://[fe80::1]/hook",
        "http://[::ffff:169.254.169.254]/hook",
        "http://[::ffff:10.1.1.1]/hook",
        "http://localhost/hook",  # a name that resolves to a blocked address
        "http://127.0.0.1:8080/hook",  # loopback, with no allowlist
    ],
)
def test_a_blocked_webhook_url_is_refused_at_submission(make_api, url: str) -> None:  # type: ignore[no-untyped-def]
    api = make_api(webhook_allowlist=())
    resp = api.client.post("/v1/jobs", json={**VALID, "webhook_url": url})
    assert resp.status_code == 422, resp.json
    assert resp.json["error"]["code"] == "webhook_url_forbidden"
    assert api.enqueuer.verified == []


@pytest.mark.parametrize(
    ("url", "code"),
    [
        ("ftp://example.com/hook", "invalid_webhook_url"),
        ("http://user:secret@example.com/hook", "invalid_webhook_url"),
        ("http://example.com:70000/hook", "invalid_webhook_url"),
    ],
)
def test_a_malformed_webhook_url_is_invalid(api: Api, url: str, code: str) -> None:
    resp = api.client.post("/v1/jobs", json={**VALID, "webhook_url": url})
    assert resp.status_code == 422 and resp.json["error"]["code"] == code


def test_an_allowlisted_address_is_accepted(api: Api) -> None:
    resp = api.client.post("/v1/jobs", json={**VALID, "webhook_url": "http://127.0.0.1:8080/hook"})
    assert resp.status_code == 202, resp.json
    assert resp.json["webhook"]["url"] == "http://127.0.0.1:8080/hook" and resp.json["webhook"]["status"] == "pending"


def test_a_name_that_does_not_resolve_is_accepted_and_left_to_delivery(api: Api) -> None:
    resp = api.client.post("/v1/jobs", json={**VALID, "webhook_url": "https://hooks.no-such-host.invalid/x"})
    assert resp.status_code == 202, resp.json


def test_the_batch_endpoint_refuses_blocked_urls_per_item(make_api) -> None:  # type: ignore[no-untyped-def]
    api = make_api(webhook_allowlist=())
    resp = api.client.post("/v1/jobs/batch", json={"jobs": [
        {**VALID, "webhook_url": "http://169.254.169.254/"}, {**VALID, "webhook_url": "https://93.184.215.14/h"},
    ]})
    assert resp.status_code == 202
    first, second = resp.json["jobs"]
    assert first["error"]["code"] == "webhook_url_forbidden" and second["status"] == "queued"


def test_deliveries_lists_the_attempts(api: Api) -> None:
    job = _finished_job(api.store)
    api.deliveries.record(job.id, {"attempt": 1, "status_code": 500, "outcome": "retrying"})
    api.deliveries.record(job.id, {"attempt": 2, "status_code": 200, "outcome": "delivered"})
    resp = api.client.get(f"/v1/jobs/{job.id}/deliveries")
    assert resp.status_code == 200
    assert [d["attempt"] for d in resp.json["deliveries"]] == [1, 2]
    assert resp.json["webhook"]["url"] == "http://127.0.0.1:9/hook" and resp.json["job_id"] == job.id


@pytest.mark.parametrize("path", ["/deliveries", "/webhook/redeliver"])
def test_unknown_and_other_tenants_jobs_are_404(api: Api, path: str) -> None:
    theirs = _finished_job(api.store, tenant="someone-else")
    method = api.client.get if path == "/deliveries" else api.client.post
    for job_id in ("no-such-job", theirs.id):
        resp = method(f"/v1/jobs/{job_id}{path}")
        assert resp.status_code == 404 and resp.json["error"]["code"] == "job_not_found"
    assert api.enqueuer.webhooks == []


def test_redeliver_starts_a_new_round(api: Api, redis_client: redis_lib.Redis) -> None:
    job = _finished_job(api.store)
    api.enqueuer.webhooks.clear()
    resp = api.client.post(f"/v1/jobs/{job.id}/webhook/redeliver")
    assert resp.status_code == 202, resp.json
    hook = resp.json["webhook"]
    assert hook["status"] == "pending" and hook["attempts"] == 0 and hook["redeliveries"] == 1
    assert api.enqueuer.webhooks == [job.id]
    assert redis_client.zscore(DUE_KEY, job.id) is not None  # the safety net if the task is lost
    redis_client.zrem(DUE_KEY, job.id)


def test_redeliver_needs_a_finished_job_with_a_webhook(api: Api) -> None:
    no_hook = _finished_job(api.store, webhook=None)
    running = _finished_job(api.store, finish=False)
    resp = api.client.post(f"/v1/jobs/{no_hook.id}/webhook/redeliver")
    assert resp.status_code == 409 and resp.json["error"]["code"] == "no_webhook"
    resp = api.client.post(f"/v1/jobs/{running.id}/webhook/redeliver")
    assert resp.status_code == 409 and resp.json["error"]["code"] == "job_not_finished"
    assert api.enqueuer.webhooks == []


def test_cancel_enqueues_the_webhook_of_a_job_that_has_one(api: Api, redis_client: redis_lib.Redis) -> None:
    with_hook = api.client.post("/v1/jobs", json={**VALID, "webhook_url": "http://127.0.0.1:9/hook"}).json
    without = api.client.post("/v1/jobs", json=VALID).json
    assert api.client.delete(f"/v1/jobs/{with_hook['id']}").status_code == 200
    assert api.client.delete(f"/v1/jobs/{without['id']}").status_code == 200
    assert api.enqueuer.webhooks == [with_hook["id"]]
    redis_client.zrem(DUE_KEY, with_hook["id"])
