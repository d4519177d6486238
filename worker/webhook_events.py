"""What a webhook carries: the event body (a stable JSON shape) and its Standard Webhooks headers."""

from __future__ import annotations

import json
import time
from datetime import datetime, timezone

from standardwebhooks import Webhook

from core.jobs import Job, Status

EVENT_TYPES = {
    Status.SUCCEEDED: "job.succeeded",
    Status.FAILED: "job.failed",
    Status.CANCELED: "job.canceled",
}
USER_AGENT = "caption-verifier-webhooks/1"


def webhook_id(job_id: str) -> str:
    """Return the ``webhook-id`` of a job's event: one event per job, so one id."""
    return f"msg_{job_id}"


def build_body(job: Job) -> bytes:
    """Return the event body: ``{"type", "timestamp", "data"}`` with the job document as data.

    The delivery state (``webhook``) is left out of ``data``: it changes between attempts,
    and the body of an event should not.
    """
    data = job.public()
    data.pop("webhook", None)
    event = {"type": EVENT_TYPES[job.status], "timestamp": job.finished_at, "data": data}
    return json.dumps(event, separators=(",", ":")).encode()


class Signer:
    """Sign bodies with every configured secret (the first is current; the rest are for rotation)."""

    def __init__(self, secrets: tuple[str, ...]) -> None:
        self._hooks = [Webhook(secret) for secret in secrets]

    @property
    def enabled(self) -> bool:
        return bool(self._hooks)

    def headers(self, msg_id: str, body: bytes, *, now: float | None = None) -> dict[str, str]:
        """Return the request headers for one attempt (a fresh timestamp each time)."""
        stamp = int(time.time() if now is None else now)
        headers = {
            "content-type": "application/json",
            "user-agent": USER_AGENT,
            "webhook-id": msg_id,
            "webhook-timestamp": str(stamp),
        }
        if self._hooks:
            at = datetime.fromtimestamp(stamp, tz=timezone.utc)
            headers["webhook-signature"] = " ".join(h.sign(msg_id, at, body) for h in self._hooks)
        return headers
