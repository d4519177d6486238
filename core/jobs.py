"""The job model and its JSON form (the job document of the HTTP contract)."""

from __future__ import annotations

import uuid
from datetime import datetime, timezone
from enum import Enum
from typing import Any

from pydantic import BaseModel, ConfigDict, Field


class Status(str, Enum):
    """The states a job moves through: queued → running → succeeded | failed | canceled."""

    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELED = "canceled"

    @property
    def terminal(self) -> bool:
        """Return whether no transition leaves this state."""
        return self in TERMINAL


TERMINAL = frozenset({Status.SUCCEEDED, Status.FAILED, Status.CANCELED})


class Mode(str, Enum):
    """Which score the threshold applies to."""

    ITM = "itm"
    ITC = "itc"


class PairResult(BaseModel):
    """The scores of one (image, text) pair."""

    text: str
    match_probability: float
    cosine_similarity: float
    match: bool


class ModelInfo(BaseModel):
    name: str
    revision: str


class ImageInfo(BaseModel):
    etag: str
    width: int
    height: int


class JobResult(BaseModel):
    """What a succeeded job found."""

    match: bool
    scores: list[PairResult]
    model: ModelInfo
    image: ImageInfo


class JobErrorBody(BaseModel):
    code: str
    message: str


class WebhookState(BaseModel):
    """Where the delivery of a job's webhook stands (attempts are in the current round)."""

    url: str
    status: str = "pending"  # pending | delivered | failed
    attempts: int = 0
    delivered_at: str | None = None
    last_error: str | None = None
    id: str | None = None  # the webhook-id header: the same on every attempt and redelivery
    last_attempt_at: str | None = None
    last_status_code: int | None = None
    next_attempt_at: str | None = None
    redeliveries: int = 0


def epoch_to_rfc3339(epoch: float) -> str:
    """Return epoch seconds as UTC RFC 3339 with milliseconds, the form job documents use."""
    return datetime.fromtimestamp(epoch, timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def now_rfc3339() -> str:
    """Return the current UTC time in RFC 3339 with milliseconds."""
    return epoch_to_rfc3339(datetime.now(timezone.utc).timestamp())


def rfc3339_to_epoch(value: str | None) -> float | None:
    """Return the epoch seconds of an RFC 3339 time from a job document (None for None)."""
    return None if not value else datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()


def new_job_id() -> str:
    """Return a new job id."""
    return uuid.uuid4().hex


# Fields kept in the store but never shown to clients.
INTERNAL_FIELDS = frozenset({"tenant", "request_hash", "worker", "created_us", "starts"})


class Job(BaseModel):
    """A verification job as stored; ``public()`` gives the job document."""

    model_config = ConfigDict(use_enum_values=False)

    id: str = Field(default_factory=new_job_id)
    status: Status = Status.QUEUED
    image: str
    texts: list[str]
    threshold: float
    mode: Mode = Mode.ITM
    priority: str = "normal"
    deadline: str | None = None
    metadata: dict[str, Any] = Field(default_factory=dict)
    created_at: str = Field(default_factory=now_rfc3339)
    started_at: str | None = None
    finished_at: str | None = None
    attempts: int = 0
    result: JobResult | None = None
    error: JobErrorBody | None = None
    webhook: WebhookState | None = None
    # internal
    tenant: str = "default"
    request_hash: str | None = None
    worker: str | None = None
    created_us: int = 0
    starts: int = 0

    def public(self) -> dict[str, Any]:
        """Return the job document of the HTTP contract."""
        doc = self.model_dump(mode="json", exclude=set(INTERNAL_FIELDS))
        return doc

    def to_json(self) -> str:
        """Serialise everything, internal fields included, for the store."""
        return self.model_dump_json()

    @classmethod
    def from_json(cls, raw: str | bytes) -> Job:
        """Parse what ``to_json`` wrote."""
        return cls.model_validate_json(raw)
