"""The error hierarchy: every error carries a stable ``code`` and the HTTP status it maps to.

API errors are rendered as ``{"error": {"code", "message"}}``; job errors end a job as
``failed`` with the same body. ``TransientError`` subclasses are retried before they fail.
"""

from __future__ import annotations

from typing import Any, ClassVar


class VerifierError(Exception):
    """Raised for every failure the service reports to a client; the root of the tree."""

    code: ClassVar[str] = "internal"
    status: ClassVar[int] = 500

    def __init__(self, message: str | None = None, *, code: str | None = None, **details: Any) -> None:
        super().__init__(message or self.__doc__ or self.code)
        self.message = message or (self.__doc__ or self.code).strip()
        if code is not None:
            self.code = code  # type: ignore[misc]
        self.details = details

    def to_dict(self) -> dict[str, Any]:
        """Return the ``error`` object of the HTTP contract."""
        body: dict[str, Any] = {"code": self.code, "message": self.message}
        if self.details:
            body["details"] = self.details
        return body


# --- API errors -------------------------------------------------------------------------


class MalformedRequest(VerifierError):
    """Raised when the request body is not valid JSON or not the expected shape."""

    code = "malformed_request"
    status = 400


class Unauthorized(VerifierError):
    """Raised when the API key is missing, unknown or revoked."""

    code = "unauthorized"
    status = 401


class Forbidden(VerifierError):
    """Raised when the key may not do this (a bucket it may not read, a missing scope)."""

    code = "forbidden"
    status = 403


class NotFound(VerifierError):
    """Raised when the resource does not exist or belongs to another tenant."""

    code = "not_found"
    status = 404


class Conflict(VerifierError):
    """Raised when the request conflicts with the resource's state."""

    code = "conflict"
    status = 409


class PayloadTooLarge(VerifierError):
    """Raised when the request body is over the configured size."""

    code = "payload_too_large"
    status = 413


class InvalidField(VerifierError):
    """Raised when a field is present but invalid."""

    code = "invalid_field"
    status = 422


class RateLimited(VerifierError):
    """Raised when a key or tenant is over its rate or quota."""

    code = "rate_limited"
    status = 429

    def __init__(self, message: str | None = None, *, retry_after: int = 1, **kw: Any) -> None:
        super().__init__(message, **kw)
        self.retry_after = retry_after


class ServiceUnavailable(VerifierError):
    """Raised when a dependency (Redis, the broker) cannot be reached."""

    code = "service_unavailable"
    status = 503
    retry_after = 5


# --- Job errors ---------------------------------------------------------------------------


class JobError(VerifierError):
    """Raised when a job cannot be completed; it ends ``failed`` with this code."""

    code = "internal"
    status = 500


class ImageNotFound(JobError):
    """Raised when the image object does not exist in its bucket."""

    code = "image_not_found"
    status = 422


class ImageAccessDenied(JobError):
    """Raised when the workers' credentials may not read the image object."""

    code = "image_access_denied"
    status = 422


class ImageTooLarge(JobError):
    """Raised when the image is over the byte or pixel cap."""

    code = "image_too_large"
    status = 422


class ImageInvalid(JobError):
    """Raised when the object is not a decodable image (wrong format, truncated, corrupt)."""

    code = "image_invalid"
    status = 422


class Expired(JobError):
    """Raised when the job's deadline passed before it ran."""

    code = "expired"
    status = 410


class Canceled(JobError):
    """Raised when the job was canceled before it ran."""

    code = "canceled"
    status = 409


class WorkerCrashed(JobError):
    """Raised when a job was started too many times without finishing."""

    code = "worker_crashed"
    status = 500


class TransientError(JobError):
    """Raised for failures worth retrying (throttling, timeouts, unreachable storage)."""

    code = "transient"
    status = 503


class StorageUnavailable(TransientError):
    """Raised when S3 is unreachable or throttling after the retries are spent."""

    code = "storage_unavailable"
    status = 503
