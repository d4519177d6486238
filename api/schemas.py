"""Request schemas: what the API validates with (and what the OpenAPI document is built from)."""

from __future__ import annotations

import json
import re
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

MAX_IDEMPOTENCY_KEY = 255  # characters of an Idempotency-Key header
DEFAULT_LIST_LIMIT, MAX_LIST_LIMIT = 50, 1000  # GET /v1/jobs?limit=
DEFAULT_WINDOW_MINUTES, MAX_WINDOW_MINUTES = 15, 60  # GET /v1/stats?window=
MAX_TEXTS = 32
MAX_TEXT_CHARS = 1000
MAX_METADATA_BYTES = 4096
MAX_BATCH_JOBS = 1000
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")


def _check_text(text: str) -> str:
    if not text.strip():
        raise ValueError("a text must not be empty or blank")
    if len(text) > MAX_TEXT_CHARS:
        raise ValueError(f"a text is at most {MAX_TEXT_CHARS} characters")
    if _CONTROL.search(text):
        raise ValueError("a text must not contain control characters")
    return text


class JobRequest(BaseModel):
    """The body of ``POST /v1/jobs``."""

    model_config = ConfigDict(extra="forbid", strict=True)

    image: str = Field(
        description="s3://bucket/key of the image", max_length=1100,
        # Documents the shape; core/s3uri.py checks S3's full rules and gives the precise codes.
        json_schema_extra={"pattern": "^s3://[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]/"},
    )
    text: str | None = Field(default=None, description="one claimed caption")
    texts: list[str] | None = Field(
        default=None, description=f"1 to {MAX_TEXTS} claimed captions", min_length=1, max_length=MAX_TEXTS
    )
    threshold: float | None = Field(default=None, ge=0.0, le=1.0, allow_inf_nan=False)
    mode: Literal["itm", "itc"] = "itm"
    webhook_url: str | None = Field(default=None, max_length=2048)
    metadata: dict[str, Any] | None = None
    priority: Literal["normal", "high"] = "normal"
    deadline: str | None = Field(default=None, description="RFC 3339; the job fails 'expired' if not run by then")

    @field_validator("text")
    @classmethod
    def _text(cls, value: str | None) -> str | None:
        return None if value is None else _check_text(value)

    @field_validator("texts")
    @classmethod
    def _texts(cls, value: list[str] | None) -> list[str] | None:
        return None if value is None else [_check_text(t) for t in value]

    @field_validator("metadata")
    @classmethod
    def _metadata(cls, value: dict[str, Any] | None) -> dict[str, Any] | None:
        if value is not None:
            try:
                size = len(json.dumps(value, allow_nan=False, separators=(",", ":")).encode())
            except ValueError:
                raise ValueError("metadata must be plain JSON (no NaN or Infinity)") from None
            if size > MAX_METADATA_BYTES:
                raise ValueError(f"metadata is at most {MAX_METADATA_BYTES} bytes of JSON")
        return value

    @model_validator(mode="after")
    def _one_of_text_texts(self) -> JobRequest:
        if (self.text is None) == (self.texts is None):
            raise ValueError("give exactly one of 'text' (a string) or 'texts' (a list of strings)")
        return self

    def claimed_texts(self) -> list[str]:
        """Return the texts as a list, whichever field carried them."""
        return [self.text] if self.text is not None else list(self.texts or [])


class BatchRequest(BaseModel):
    """The body of ``POST /v1/jobs/batch``: each item is validated on its own."""

    model_config = ConfigDict(extra="forbid", strict=True)

    jobs: list[dict[str, Any]] = Field(min_length=1, max_length=MAX_BATCH_JOBS)
