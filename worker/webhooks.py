"""Webhook delivery: one attempt per task, retries on a schedule kept in Redis (no Celery here).

``WebhookDeliverer.deliver(job_id)`` makes the attempt that is due, records it, and either
ends the delivery (delivered, or failed) or schedules the next attempt in the ``due`` sorted
set. ``RetryPoller`` (a thread in webhook workers) enqueues entries as they come due. A
per-job lease serialises attempts, and every state change is a compare-and-set on the job,
so duplicated task messages and racing workers send each due attempt once.
"""

from __future__ import annotations

import email.utils
import logging
import random
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timezone
from typing import Any

import redis

from core.deliveries import RECLAIM_SECONDS, DeliveryLog
from core.jobs import Job, epoch_to_rfc3339, now_rfc3339, rfc3339_to_epoch
from core.metrics import Recorder
from core.ssrf import (
    Resolver,
    ResolutionFailed,
    WebhookUrlForbidden,
    WebhookUrlInvalid,
    parse_networks,
    pin,
    system_resolver,
)
from core.settings import Settings
from core.store import JobStore
from worker.webhook_events import Signer, build_body, webhook_id
from worker.webhook_http import PinnedSender, SendError

log = logging.getLogger(__name__)

DELIVERED, RETRYING, FAILED = "delivered", "retrying", "failed"
BUSY_RETRY_SECONDS = 1.0  # another worker holds the lease: look again this soon
EARLY_SLACK_SECONDS = 0.005
JITTER = 0.1  # each delay is drawn from ±10 % of its schedule value


def parse_retry_after(value: str | None, *, now: float) -> float | None:
    """Return the seconds a ``Retry-After`` header asks for (delta-seconds or an HTTP date)."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=timezone.utc)
    return max(0.0, when.timestamp() - now)


@dataclass(frozen=True)
class Verdict:
    """How one attempt went: ``outcome`` is delivered, retrying or failed."""

    outcome: str
    status_code: int | None = None
    error: str | None = None
    message: str | None = None
    retry_after: float | None = None


def judge_response(status: int, retry_after: float | None) -> Verdict:
    """Classify a response: 2xx delivered, 410 stops, anything else is retried."""
    if 200 <= status < 300:
        return Verdict(DELIVERED, status)
    if status == 410:
        return Verdict(FAILED, status, "gone", "the consumer answered 410 Gone; no more attempts")
    if 300 <= status < 400:
        return Verdict(RETRYING, status, "redirect_not_followed", f"the consumer answered {status}; redirects are not followed")
    return Verdict(RETRYING, status, "http_error", f"the consumer answered {status}", retry_after)


class WebhookDeliverer:
    """Make due webhook attempts for jobs, record them, and schedule what comes next."""

    def __init__(self, settings: Settings, store: JobStore, deliveries: DeliveryLog, *, name: str,
                 sender: PinnedSender | None = None, resolver: Resolver = system_resolver,
                 on_scheduled: Callable[[float], None] = lambda due: None,
                 on_attempt: Callable[[Job, Verdict], None] = lambda job, verdict: None,
                 clock: Callable[[], float] = time.time) -> None:
        self.store = store
        self.deliveries = deliveries
        self.name = name
        self.delays = settings.webhook_retry_delays
        self.retry_after_max = settings.webhook_retry_after_max
        self.allowlist = parse_networks(settings.webhook_allowlist)
        self.dns_timeout = settings.webhook_dns_timeout
        self.signer = Signer(settings.webhook_secrets)
        self.sender = sender or PinnedSender(
            connect_timeout=settings.webhook_connect_timeout, read_timeout=settings.webhook_read_timeout,
            max_response_bytes=settings.webhook_max_response_bytes,
        )
        self.lease_seconds = (settings.webhook_dns_timeout + 2 * settings.webhook_connect_timeout
                              + 2 * settings.webhook_read_timeout + 10.0)
        self.resolver = resolver
        self.on_scheduled = on_scheduled
        self.on_attempt = on_attempt
        self.clock = clock

    def deliver(self, job_id: str) -> str:
        """Make the attempt due for ``job_id``, if any; return what happened (for logs and tests)."""
        owner = f"{self.name}:{uuid.uuid4().hex[:8]}"
        if not self.deliveries.acquire(job_id, owner, ttl=self.lease_seconds):
            # Someone is attempting it now; come back once they have recorded the outcome.
            soon = self.clock() + BUSY_RETRY_SECONDS
            self.deliveries.schedule(job_id, soon, only_sooner=True)
            self.on_scheduled(soon)
            return "busy"
        try:
            job = self.store.get(job_id)
            if job is None or job.webhook is None or not job.status.terminal:
                if job is None:
                    self.deliveries.unschedule(job_id)
                return "skipped"
            if job.webhook.status != "pending":
                self.deliveries.unschedule(job_id)
                return "skipped"
            due = rfc3339_to_epoch(job.webhook.next_attempt_at)
            if due is not None and due > self.clock() + EARLY_SLACK_SECONDS:
                self.deliveries.schedule(job_id, due)  # the job is the truth; mend the entry
                self.on_scheduled(due)
                return "early"
            return self._attempt(job)
        finally:
            self.deliveries.release(job_id, owner)

    def _attempt(self, job: Job) -> str:
        assert job.webhook is not None
        state = job.webhook
        number, round_ = state.attempts + 1, state.redeliveries
        msg_id = state.id or webhook_id(job.id)
        at = now_rfc3339()
        began = time.perf_counter()
        verdict = self._send(job, msg_id)
        duration_ms = round((time.perf_counter() - began) * 1000, 1)
        next_due: float | None = None
        if verdict.outcome == RETRYING:
            if number > len(self.delays):
                verdict = Verdict(FAILED, verdict.status_code, verdict.error,
                                  f"{verdict.message}; no attempts left after {number}")
            else:
                next_due = self.clock() + self._delay(number, verdict.retry_after)
        next_at = epoch_to_rfc3339(next_due) if next_due is not None else None
        self.deliveries.record(job.id, {
            "webhook_id": msg_id, "attempt": number, "redelivery": round_, "at": at,
            "status_code": verdict.status_code, "error": verdict.error, "message": verdict.message,
            "duration_ms": duration_ms, "outcome": verdict.outcome, "next_attempt_at": next_at,
        })

        def mutate(current: Job) -> bool:
            w = current.webhook
            if w is None or w.status != "pending" or w.redeliveries != round_ or w.attempts != number - 1:
                return False  # redelivered or recorded meanwhile: the newer state wins
            w.id = msg_id
            w.attempts = number
            w.last_attempt_at = at
            w.last_status_code = verdict.status_code
            w.last_error = verdict.error
            w.next_attempt_at = next_at
            if verdict.outcome == DELIVERED:
                w.status, w.delivered_at = "delivered", now_rfc3339()
            elif verdict.outcome == FAILED:
                w.status = "failed"
            return True

        if self.store.update(job.id, mutate) is None:
            return "superseded"
        self.on_attempt(job, verdict)
        if next_due is not None:
            self.deliveries.schedule(job.id, next_due)
            self.on_scheduled(next_due)
        else:
            self.deliveries.unschedule(job.id)
        level = logging.INFO if verdict.outcome == DELIVERED else logging.WARNING
        log.log(level, "webhook %s of job %s attempt %d: %s (%s %s) in %.0f ms", msg_id, job.id, number,
                verdict.outcome, verdict.status_code, verdict.error, duration_ms)
        return verdict.outcome

    def _send(self, job: Job, msg_id: str) -> Verdict:
        assert job.webhook is not None
        try:
            pinned = pin(job.webhook.url, allowlist=self.allowlist, timeout=self.dns_timeout, resolver=self.resolver)
        except (WebhookUrlInvalid, WebhookUrlForbidden) as exc:  # DNS may now name a refused address
            return Verdict(FAILED, None, exc.code, exc.message)
        except ResolutionFailed as exc:
            return Verdict(RETRYING, None, ResolutionFailed.code, str(exc))
        body = build_body(job)
        try:
            resp = self.sender.post(pinned, body, self.signer.headers(msg_id, body))
        except SendError as exc:
            return Verdict(RETRYING, None, exc.code, exc.message)
        return judge_response(resp.status, parse_retry_after(resp.headers.get("retry-after"), now=self.clock()))

    def _delay(self, number: int, retry_after: float | None) -> float:
        """Return the wait before attempt ``number + 1``: the schedule with jitter, or longer if asked."""
        delay = self.delays[number - 1] * random.uniform(1 - JITTER, 1 + JITTER)
        if retry_after is not None:
            delay = max(delay, min(retry_after, self.retry_after_max))
        return delay

    def close(self) -> None:
        self.sender.close()


class RetryPoller:
    """A thread that enqueues webhook attempts as they come due (in webhook workers only)."""

    def __init__(self, deliveries: DeliveryLog, enqueue: Callable[[str], Any], *, interval: float,
                 hold: float, batch: int = 200) -> None:
        self.deliveries = deliveries
        self.enqueue = enqueue
        self.interval = interval
        self.hold = hold
        self.batch = batch
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._thread = threading.Thread(target=self._run, name="webhook-retries", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def wake(self, due: float | None = None) -> None:
        """Look at the schedule now (an entry was added that may come due before the next poll)."""
        self._wake.set()

    def poll(self) -> int:
        """Enqueue every due entry (claiming each for ``hold`` seconds); return how many."""
        ids = self.deliveries.claim_due(time.time(), limit=self.batch, hold=self.hold)
        for job_id in ids:
            self.enqueue(job_id)
        return len(ids)

    def _run(self) -> None:
        while not self._stop.is_set():
            wait = self.interval
            try:
                if self.poll() >= self.batch:
                    continue
                first = self.deliveries.next_due()
                if first is not None:
                    wait = min(self.interval, max(0.005, first - time.time()))
            except redis.RedisError as exc:
                log.warning("webhook retry poll failed (Redis): %s", exc)
            except Exception:  # noqa: BLE001 - the poller must outlive any bug
                log.exception("webhook retry poll failed")
            self._wake.wait(wait)
            self._wake.clear()

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread.is_alive():
            self._thread.join(timeout=5)


class WebhookService:
    """The webhook side of a worker process: the deliverer and the retry poller."""

    def __init__(self, settings: Settings, store: JobStore, client: redis.Redis, *, name: str,
                 enqueue: Callable[[str], Any], resolver: Resolver = system_resolver) -> None:
        self.deliveries = DeliveryLog(client, ttl_seconds=settings.result_ttl_seconds)
        self.poller = RetryPoller(self.deliveries, enqueue, interval=settings.webhook_poll_seconds,
                                  hold=RECLAIM_SECONDS)
        metrics = Recorder(client)
        self.deliverer = WebhookDeliverer(
            settings, store, self.deliveries, name=name, resolver=resolver, on_scheduled=self.poller.wake,
            on_attempt=lambda job, v: metrics.webhook(v.outcome, job_id=job.id, error=v.message or v.error),
        )
        if not settings.webhook_secrets:
            log.warning("VERIFIER_WEBHOOK_SECRET is not set: webhooks are sent UNSIGNED "
                        "(no webhook-signature header); consumers cannot tell them from forgeries")

    def start(self) -> None:
        """Start polling the retry schedule."""
        self.poller.start()

    def deliver(self, job_id: str) -> str:
        """Make the attempt due for ``job_id``."""
        return self.deliverer.deliver(job_id)

    def close(self) -> None:
        """Stop the poller and close connections."""
        self.poller.stop()
        self.deliverer.close()
