"""Webhook delivery against real HTTP receivers on 127.0.0.1 and a real Redis.

The deliverer and its retry poller run in-process; the poller's "enqueue" hands job ids to
a thread pool standing in for the Celery webhook queue.
"""

from __future__ import annotations

import base64
import dataclasses
import datetime as dt
import hashlib
import hmac
import json
import logging
import ssl
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import redis as redis_lib
from standardwebhooks import Webhook

from core import metrics
from core.deliveries import DUE_KEY, DeliveryLog
from core.errors import ImageNotFound
from core.jobs import ImageInfo, Job, JobResult, ModelInfo, PairResult, WebhookState
from core.settings import Settings
from core.store import JobStore
from tests.helpers import wait_for
from tests.receivers import Receiver, Reply, receiving
from worker.webhook_events import webhook_id
from worker.webhook_http import PinnedSender
from worker.webhooks import WebhookService

SECRET = "whsec_" + base64.b64encode(b"first secret, 32 bytes long!!!!!").decode()
OLD_SECRET = "whsec_" + base64.b64encode(b"the previous secret, rotated out").decode()


@dataclasses.dataclass
class Harness:
    settings: Settings
    store: JobStore
    deliveries: DeliveryLog
    service: WebhookService

    def job(self, url: str, *, outcome: str = "succeeded") -> Job:
        """Store a finished job with a webhook, and return it."""
        job = Job(image="s3://bucket/cat.jpg", texts=["a cat"], threshold=0.5, metadata={"post": 7},
                  webhook=WebhookState(url=url))
        self.store.create(job)
        self.store.start(job.id, worker="w")
        if outcome == "succeeded":
            result = JobResult(match=True, scores=[PairResult(text="a cat", match_probability=0.9,
                                                              cosine_similarity=0.4, match=True)],
                               model=ModelInfo(name="random:tiny", revision="r"),
                               image=ImageInfo(etag="e", width=4, height=3))
            done = self.store.succeed(job.id, result, worker="w")
        elif outcome == "failed":
            done = self.store.fail(job.id, ImageNotFound("no such object"), worker="w")
        else:
            done = self.store.cancel(job.id)
        assert done is not None
        return done

    def send(self, job: Job) -> None:
        """Enqueue the first attempt, as the verify worker does when the job ends."""
        self.service.poller.enqueue(job.id)

    def final(self, job: Job, *, timeout: float = 15.0) -> Job:
        """Wait until the delivery is delivered or failed; return the job."""
        def done() -> Job | None:
            current = self.store.get(job.id)
            assert current is not None and current.webhook is not None
            return current if current.webhook.status != "pending" else None

        return wait_for(done, timeout=timeout, interval=0.02, what=f"webhook of job {job.id}")


@pytest.fixture()
def make_harness(settings: Settings, redis_client: redis_lib.Redis) -> Iterator[Callable[..., Harness]]:
    """Build a store, a delivery log and a running webhook service; stop them afterwards."""
    made: list[tuple[WebhookService, ThreadPoolExecutor]] = []

    def make(**overrides: object) -> Harness:
        redis_client.delete(DUE_KEY)
        opts: dict[str, object] = {"webhook_secrets": (SECRET,), "webhook_poll_seconds": 0.05}
        opts.update(overrides)
        sender = opts.pop("sender", None)
        resolver = opts.pop("resolver", None)
        s = dataclasses.replace(settings, **opts)  # type: ignore[arg-type]
        store = JobStore(redis_client, result_ttl_seconds=600)
        pool = ThreadPoolExecutor(max_workers=8)
        box: dict[str, WebhookService] = {}
        kw = {"resolver": resolver} if resolver else {}

        def run(job_id: str) -> None:  # what the Celery task does, with errors made visible
            try:
                box["service"].deliver(job_id)
            except Exception:
                logging.exception("delivering %s failed", job_id)
                raise

        service = WebhookService(s, store, redis_client, name="test", enqueue=lambda job_id: pool.submit(run, job_id),
                                 **kw)
        if sender is not None:
            service.deliverer.sender = sender  # type: ignore[assignment]
        box["service"] = service
        service.start()
        made.append((service, pool))
        return Harness(s, store, service.deliveries, service)

    yield make
    for service, pool in made:
        service.close()
        pool.shutdown(wait=True)


def _own_hmac_verify(secret: str, headers: dict[str, str], body: bytes) -> bool:
    key = base64.b64decode(secret.removeprefix("whsec_"))
    signed = f"{headers['webhook-id']}.{headers['webhook-timestamp']}.".encode() + body
    expected = "v1," + base64.b64encode(hmac.new(key, signed, hashlib.sha256).digest()).decode()
    return any(hmac.compare_digest(expected, sig) for sig in headers["webhook-signature"].split(" "))


def test_delivers_a_signed_job_succeeded_event(make_harness) -> None:  # type: ignore[no-untyped-def]
    h = make_harness(webhook_secrets=(SECRET, OLD_SECRET))
    with receiving() as rx:
        job = h.job(rx.url("/hooks/verifier?src=test"))
        h.send(job)
        done = h.final(job)

    assert done.webhook is not None and done.webhook.status == "delivered"
    assert done.webhook.attempts == 1 and done.webhook.last_status_code == 200 and done.webhook.delivered_at
    [req] = rx.requests
    assert req.path == "/hooks/verifier?src=test"
    # An independent verifier (the Standard Webhooks reference library) accepts it, with
    # the current secret and with the one being rotated out.
    event = Webhook(SECRET).verify(req.body, req.headers)
    assert Webhook(OLD_SECRET).verify(req.body, req.headers) == event
    assert _own_hmac_verify(SECRET, req.headers, req.body)
    assert len(req.headers["webhook-signature"].split(" ")) == 2
    assert req.headers["webhook-id"] == webhook_id(job.id) == done.webhook.id
    assert req.headers["content-type"] == "application/json"
    # The body is the stable event shape around the job document.
    assert event["type"] == "job.succeeded" and event["timestamp"] == done.finished_at
    data = event["data"]
    assert data["id"] == job.id and data["status"] == "succeeded" and data["metadata"] == {"post": 7}
    assert data["result"]["match"] is True and data["error"] is None and "webhook" not in data
    assert "tenant" not in data


def test_a_tampered_body_does_not_verify(make_harness) -> None:  # type: ignore[no-untyped-def]
    h = make_harness()
    with receiving() as rx:
        h.send(job := h.job(rx.url()))
        h.final(job)
    req = rx.requests[0]
    with pytest.raises(Exception, match="No matching signature"):
        Webhook(SECRET).verify(req.body.replace(b"succeeded", b"failed"), req.headers)


@pytest.mark.parametrize(("outcome", "event_type", "code"),
                         [("failed", "job.failed", "image_not_found"), ("canceled", "job.canceled", "canceled")])
def test_failed_and_canceled_jobs_send_their_event(make_harness, outcome, event_type, code) -> None:  # type: ignore[no-untyped-def]
    h = make_harness()
    with receiving() as rx:
        h.send(job := h.job(rx.url(), outcome=outcome))
        h.final(job)
    event = Webhook(SECRET).verify(rx.requests[0].body, rx.requests[0].headers)
    assert event["type"] == event_type and event["data"]["error"]["code"] == code and event["data"]["result"] is None


def test_fails_twice_then_succeeds_in_three_attempts_with_one_webhook_id(make_harness) -> None:  # type: ignore[no-untyped-def]
    h = make_harness()
    with receiving([Reply(500), Reply(503), Reply(204)]) as rx:
        h.send(job := h.job(rx.url()))
        done = h.final(job)

    assert done.webhook is not None and done.webhook.status == "delivered" and done.webhook.attempts == 3
    assert len({r.headers["webhook-id"] for r in rx.requests}) == 1 and rx.count == 3
    for req in rx.requests:  # each attempt is signed afresh
        Webhook(SECRET).verify(req.body, req.headers)
    records = h.deliveries.attempts(job.id)
    assert [(r["attempt"], r["status_code"], r["outcome"]) for r in records] == [
        (1, 500, "retrying"), (2, 503, "retrying"), (3, 204, "delivered")]
    assert all(r["duration_ms"] >= 0 and r["at"] for r in records)
    # The waits follow the schedule (0.2 s, then 0.4 s, with ±10 % jitter).
    gaps = [b.at - a.at for a, b in zip(rx.requests, rx.requests[1:])]
    assert gaps[0] >= 0.17 and gaps[1] >= 0.35
    assert h.deliveries.due_at(job.id) is None


def test_every_recorded_attempt_is_counted_in_the_metrics(make_harness, redis_client) -> None:  # type: ignore[no-untyped-def]
    # Given a receiver that fails once and then accepts, with the counters emptied
    redis_client.delete(f"{metrics.M}webhooks", f"{metrics.M}webhook_failures")
    h = make_harness()
    with receiving([Reply(500), Reply(204)]) as rx:
        h.send(job := h.job(rx.url()))
        h.final(job)
    # Then /metrics and the dashboard see one retrying attempt and one delivered
    wait_for(lambda: metrics.webhook_counts(redis_client).get("delivered"), timeout=5, what="the delivered count")
    assert metrics.webhook_counts(redis_client) == {"retrying": 1, "delivered": 1}


def test_a_receiver_that_always_fails_is_marked_failed_after_the_schedule(make_harness) -> None:  # type: ignore[no-untyped-def]
    h = make_harness()
    with receiving([Reply(500)]) as rx:
        h.send(job := h.job(rx.url()))
        done = h.final(job)
    assert done.webhook is not None and done.webhook.status == "failed"
    assert done.webhook.attempts == 3 == rx.count  # 1 + len(webhook_retry_delays)
    assert done.webhook.last_error == "http_error" and done.webhook.last_status_code == 500
    last = h.deliveries.attempts(job.id)[-1]
    assert last["outcome"] == "failed" and "no attempts left" in last["message"]


def test_410_gone_stops_retrying(make_harness) -> None:  # type: ignore[no-untyped-def]
    h = make_harness()
    with receiving([Reply(410), Reply(200)]) as rx:
        h.send(job := h.job(rx.url()))
        done = h.final(job)
        threading.Event().wait(0.5)
    assert done.webhook is not None and done.webhook.status == "failed" and done.webhook.last_error == "gone"
    assert rx.count == 1


def test_a_slow_receiver_times_out_and_is_retried(make_harness) -> None:  # type: ignore[no-untyped-def]
    h = make_harness(webhook_read_timeout=0.3)
    with receiving([Reply(200, delay=1.0), Reply(200)]) as rx:
        h.send(job := h.job(rx.url()))
        done = h.final(job)
    assert done.webhook is not None and done.webhook.status == "delivered" and done.webhook.attempts == 2
    first = h.deliveries.attempts(job.id)[0]
    assert first["error"] == "read_timeout" and first["status_code"] is None and 250 <= first["duration_ms"] < 900


def test_a_redirect_is_not_followed(make_harness) -> None:  # type: ignore[no-untyped-def]
    h = make_harness()
    with receiving() as target, receiving([Reply(302, {"Location": target.url("/elsewhere")})]) as rx:
        h.send(job := h.job(rx.url()))
        done = h.final(job)
    assert target.count == 0, "the redirect target must receive nothing"
    assert done.webhook is not None and done.webhook.status == "failed" and rx.count == 3
    assert done.webhook.last_error == "redirect_not_followed" and done.webhook.last_status_code == 302


def test_retry_after_is_honoured(make_harness) -> None:  # type: ignore[no-untyped-def]
    h = make_harness()
    with receiving([Reply(429, {"Retry-After": "1"}), Reply(200)]) as rx:
        h.send(job := h.job(rx.url()))
        h.final(job)
    assert rx.requests[1].at - rx.requests[0].at >= 0.95


def test_retry_after_is_capped(make_harness) -> None:  # type: ignore[no-untyped-def]
    h = make_harness(webhook_retry_after_max=0.3)
    when = (dt.datetime.now(dt.timezone.utc) + dt.timedelta(hours=2)).strftime("%a, %d %b %Y %H:%M:%S GMT")
    with receiving([Reply(503, {"Retry-After": when}), Reply(200)]) as rx:
        h.send(job := h.job(rx.url()))
        done = h.final(job, timeout=5)
    assert done.webhook is not None and done.webhook.status == "delivered"


def test_connection_refused_is_retried_then_failed(make_harness) -> None:  # type: ignore[no-untyped-def]
    h = make_harness()
    rx = Receiver()  # bound but never serving: take its port, then close it
    url = rx.url()
    rx.server.server_close()
    h.send(job := h.job(url))
    done = h.final(job)
    assert done.webhook is not None and done.webhook.status == "failed" and done.webhook.attempts == 3
    assert {r["error"] for r in h.deliveries.attempts(job.id)} == {"connection_error"}


@pytest.mark.parametrize("address", ["127.0.0.1", "10.0.0.7", "169.254.169.254", "100.64.1.1", "::ffff:127.0.0.1",
                                     "fd00::1", "fe80::1", "224.0.0.1"])
def test_dns_naming_a_blocked_address_at_delivery_fails_it(make_harness, address) -> None:  # type: ignore[no-untyped-def]
    # Given a job accepted when its host looked public, whose DNS now answers a blocked address
    h = make_harness(webhook_allowlist=(), resolver=lambda host, port: [address])
    with receiving() as rx:
        h.send(job := h.job(f"http://hooks.example.com:{rx.port}/hook"))
        done = h.final(job)
    # Then nothing is sent and the delivery fails at once with a clear code
    assert rx.count == 0
    assert done.webhook is not None and done.webhook.status == "failed" and done.webhook.attempts == 1
    assert done.webhook.last_error == "webhook_url_forbidden"


def test_localhost_without_an_allowlist_is_refused_at_delivery(make_harness) -> None:  # type: ignore[no-untyped-def]
    h = make_harness(webhook_allowlist=())
    with receiving() as rx:
        h.send(job := h.job(rx.url(host="localhost")))
        done = h.final(job)
    assert rx.count == 0 and done.webhook is not None and done.webhook.last_error == "webhook_url_forbidden"


def test_a_name_is_resolved_once_and_the_checked_address_is_dialled(make_harness) -> None:  # type: ignore[no-untyped-def]
    # The resolver answers a loopback address (allowlisted) for a made-up name: the request
    # reaches the receiver, carrying the URL's host in its Host header.
    lookups: list[str] = []

    def resolver(host: str, port: int) -> list[str]:
        lookups.append(host)
        return ["127.0.0.1"]

    h = make_harness(resolver=resolver)
    with receiving() as rx:
        h.send(job := h.job(rx.url(host="hooks.consumer.test")))
        h.final(job)
    assert lookups == ["hooks.consumer.test"]
    assert rx.requests[0].headers["host"] == f"hooks.consumer.test:{rx.port}"


def _tls_context(tmp_path: Path, name: str) -> tuple[ssl.SSLContext, str]:
    """Return a server context with a self-signed certificate for ``name``, and its CA file."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = dt.datetime.now(dt.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(subject).issuer_name(subject).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - dt.timedelta(minutes=1))
            .not_valid_after(now + dt.timedelta(hours=1))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName(name)]), critical=False)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(key, hashes.SHA256()))
    cert_file, key_file = tmp_path / f"{name}.pem", tmp_path / f"{name}.key"
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(cert_file, key_file)
    return ctx, str(cert_file)


@pytest.mark.parametrize(("cert_name", "outcome", "error"),
                         [("hooks.consumer.test", "delivered", None), ("someone-else.test", "failed", "tls_error")])
def test_https_to_a_pinned_address_verifies_the_host_name(make_harness, tmp_path, cert_name, outcome, error) -> None:  # type: ignore[no-untyped-def]
    # Given an HTTPS receiver on 127.0.0.1 and a name that resolves to it
    ctx, ca_file = _tls_context(tmp_path, cert_name)
    s = dataclasses.replace(Settings(), webhook_read_timeout=2.0)
    sender = PinnedSender(connect_timeout=s.webhook_connect_timeout, read_timeout=s.webhook_read_timeout,
                          max_response_bytes=1024, ca_certs=ca_file)
    h = make_harness(resolver=lambda host, port: ["127.0.0.1"], sender=sender, webhook_retry_delays=())
    with receiving(tls=ctx) as rx:
        h.send(job := h.job(rx.url(host="hooks.consumer.test")))
        done = h.final(job)
    # Then the certificate is checked against the URL's name (sent as SNI), not the address
    assert done.webhook is not None and done.webhook.status == outcome and done.webhook.last_error == error
    assert rx.count == (1 if outcome == "delivered" else 0)


def test_duplicate_tasks_racing_send_once(make_harness) -> None:  # type: ignore[no-untyped-def]
    # Given eight copies of the same task message arriving at once (at-least-once delivery)
    h = make_harness()
    with receiving([Reply(200, delay=0.2)]) as rx:
        job = h.job(rx.url())
        barrier = threading.Barrier(8)

        def race() -> str:
            barrier.wait()
            return h.service.deliver(job.id)

        with ThreadPoolExecutor(8) as pool:
            outcomes = list(pool.map(lambda _: race(), range(8)))
        h.final(job)
        threading.Event().wait(1.5)  # let any bounced copy come back
    # Then exactly one request was sent
    assert rx.count == 1 and outcomes.count("delivered") == 1
    assert h.store.get(job.id).webhook.attempts == 1  # type: ignore[union-attr]


def test_jobs_that_are_unknown_or_not_finished_are_skipped(make_harness) -> None:  # type: ignore[no-untyped-def]
    h = make_harness()
    assert h.service.deliver("no-such-job") == "skipped"
    job = Job(image="s3://b/k.jpg", texts=["x"], threshold=0.5, webhook=WebhookState(url="http://127.0.0.1:9/"))
    h.store.create(job)
    assert h.service.deliver(job.id) == "skipped"


def test_an_early_task_leaves_the_attempt_to_its_due_time(make_harness) -> None:  # type: ignore[no-untyped-def]
    h = make_harness(webhook_retry_delays=(30.0,))
    with receiving([Reply(500)]) as rx:
        h.send(job := h.job(rx.url()))
        wait_for(lambda: h.deliveries.attempts(job.id), timeout=5, what="first attempt")
        wait_for(lambda: (h.deliveries.due_at(job.id) or 0) > 0, timeout=5, what="a scheduled retry")
        assert h.service.deliver(job.id) == "early"
    assert rx.count == 1
    due = h.deliveries.due_at(job.id)
    assert due is not None and 20 < due - rx.requests[0].at < 40


def test_claiming_due_entries_gives_each_to_one_poller(redis_client) -> None:  # type: ignore[no-untyped-def]
    log = DeliveryLog(redis_client, ttl_seconds=60)
    redis_client.delete(DUE_KEY)
    for i in range(200):
        log.schedule(f"job-{i}", 1000.0 + i)
    claimed: list[list[str]] = []
    barrier = threading.Barrier(4)

    def claim() -> None:
        barrier.wait()
        mine: list[str] = []
        while batch := log.claim_due(2000.0, limit=7, hold=10_000):
            mine.extend(batch)
        claimed.append(mine)

    threads = [threading.Thread(target=claim) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    everything = [i for mine in claimed for i in mine]
    assert sorted(everything) == sorted(f"job-{i}" for i in range(200))
    assert log.claim_due(2000.0, limit=10, hold=1) == []
    assert log.due_at("job-0") == 12_000.0  # held, not dropped: a lost task comes due again
    redis_client.delete(DUE_KEY)


def test_attempt_records_expire_with_the_job(make_harness, redis_client) -> None:  # type: ignore[no-untyped-def]
    h = make_harness()
    with receiving() as rx:
        h.send(job := h.job(rx.url()))
        h.final(job)
    ttl = redis_client.ttl(f"cv:wh:attempts:{job.id}")
    assert 0 < ttl <= h.settings.result_ttl_seconds
    assert json.loads(redis_client.lindex(f"cv:wh:attempts:{job.id}", 0))["outcome"] == "delivered"
