"""Fetch image bytes from S3: one boto3 client per process, capped reads, bounded retries.

Error mapping (S3 answer → job error):

- ``NoSuchKey`` / 404 → ``ImageNotFound``; ``NoSuchBucket`` (or a HEAD 404 whose bucket
  is missing) → ``ImageNotFound`` naming the bucket;
- ``AccessDenied`` / any 403 → ``ImageAccessDenied``;
- over ``max_bytes`` (by HEAD, by the GET's Content-Length, or while streaming) → ``ImageTooLarge``;
- throttling and server errors (``SlowDown``, ``RequestTimeout``, ``InternalError``, 429,
  5xx), connection errors and timeouts, a body cut short, and ``PreconditionFailed`` (the
  object changed between HEAD and GET) → retried with backoff, then ``StorageUnavailable``;
- any other S3 error → ``JobError`` (code ``internal``) carrying S3's code.
"""

from __future__ import annotations

import logging
import random
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import boto3
import urllib3
from botocore.config import Config
from botocore.exceptions import ClientError, HTTPClientError, IncompleteReadError
from botocore.exceptions import ConnectionError as BotoConnectionError

from core.errors import ImageAccessDenied, ImageNotFound, ImageTooLarge, JobError, StorageUnavailable
from core.s3uri import parse_s3_uri

if TYPE_CHECKING:
    from core.settings import Settings

log = logging.getLogger(__name__)

CHUNK_BYTES = 256 * 1024
MAX_BACKOFF_S = 5.0
DEFAULT_FETCH_TIMEOUT_S = 30.0

_TRANSIENT_CODES = frozenset(
    {
        "SlowDown",
        "RequestTimeout",
        "InternalError",
        "ServiceUnavailable",
        "Throttling",
        "ThrottlingException",
        "RequestLimitExceeded",
        "TooManyRequests",
        "BadGateway",
        "GatewayTimeout",
    }
)
_TRANSPORT_ERRORS = (BotoConnectionError, HTTPClientError, IncompleteReadError)


@dataclass(frozen=True, slots=True)
class FetchedImage:
    """The bytes of an image object and the version they came from."""

    data: bytes
    etag: str  # without the surrounding quotes
    content_length: int


class _Retry(Exception):
    """Raised inside one attempt for a failure worth another attempt."""


def create_s3_client(settings: Settings, *, connect_timeout: float = 3.0, read_timeout: float = 10.0) -> Any:
    """Create the process's S3 client (the caller caches it); credentials come from boto3's chain."""
    config = Config(
        connect_timeout=connect_timeout,
        # Per socket read, so a 20 MiB body is fine; fetch_image bounds the whole transfer.
        read_timeout=read_timeout,
        # One attempt per call: fetch_image retries around HEAD+GET as a unit, and two
        # nested retry loops would multiply into an unbounded-looking wait.
        retries={"mode": "standard", "total_max_attempts": 1},
        max_pool_connections=max(10, settings.io_threads * 2),
        tcp_keepalive=True,
        # Custom endpoints (MinIO, moto, VPC endpoints by IP) rarely resolve bucket subdomains.
        s3={"addressing_style": "path" if settings.s3_endpoint_url else "auto"},
    )
    # A private session: boto3's default session is not safe to share across threads.
    session = boto3.session.Session()
    return session.client(
        "s3", endpoint_url=settings.s3_endpoint_url, region_name=settings.s3_region, config=config
    )


def fetch_image(
    client: Any,
    uri: str,
    *,
    max_bytes: int,
    retries: int,
    backoff_base: float = 0.2,
    timeout: float = DEFAULT_FETCH_TIMEOUT_S,
) -> FetchedImage:
    """Download the object at ``uri`` (at most ``max_bytes``), retrying transient failures.

    The whole call takes at most about ``timeout`` plus one HEAD and one GET's
    connect+read timeouts: no retry sleep starts that would end past the deadline,
    and streaming stops at it.
    """
    bucket, key = parse_s3_uri(uri)
    deadline = time.monotonic() + timeout
    attempt = 0
    while True:
        try:
            return _fetch_once(client, bucket, key, max_bytes=max_bytes, deadline=deadline)
        except _Retry as exc:
            if attempt >= retries:
                raise StorageUnavailable(f"S3 failed {attempt + 1} times for {uri}: {exc}") from None
            delay = backoff_delay(attempt, backoff_base)
            if time.monotonic() + delay > deadline:
                raise StorageUnavailable(f"S3 fetch of {uri} ran out of its {timeout:g}s budget: {exc}") from None
            log.warning("retrying S3 fetch of %s in %.2fs (retry %d of %d): %s", uri, delay, attempt + 1, retries, exc)
            time.sleep(delay)
            attempt += 1


def backoff_delay(attempt: int, base: float) -> float:
    """Return the sleep before retry ``attempt`` (0-based): exponential with equal jitter."""
    ceiling = min(MAX_BACKOFF_S, base * 2**attempt)
    return ceiling / 2 + random.uniform(0, ceiling / 2)


def _fetch_once(client: Any, bucket: str, key: str, *, max_bytes: int, deadline: float) -> FetchedImage:
    uri = f"s3://{bucket}/{key}"
    try:
        head = _call(client.head_object, uri, Bucket=bucket, Key=key)
    except ImageNotFound:
        # A HEAD 404 has no body, so it cannot tell a missing key from a missing bucket.
        if not _bucket_exists(client, bucket):
            raise ImageNotFound(f"bucket {bucket!r} does not exist") from None
        raise
    _check_size(int(head.get("ContentLength", 0)), max_bytes, uri)
    etag = str(head.get("ETag", ""))
    if time.monotonic() > deadline:
        raise StorageUnavailable(f"S3 fetch of {uri} ran out of time")
    # If-Match keeps the bytes, the size HEAD checked and the ETag we report one version:
    # an object replaced in between fails with 412 and the attempt starts over.
    extra = {"IfMatch": etag} if etag else {}
    response = _call(client.get_object, uri, Bucket=bucket, Key=key, **extra)
    body = response["Body"]
    try:
        expected = response.get("ContentLength")
        _check_size(int(expected or 0), max_bytes, uri)
        data = _read_capped(body, max_bytes=max_bytes, expected=expected, deadline=deadline, uri=uri)
    finally:
        # Closing mid-stream drops the connection rather than draining a huge body.
        body.close()
    etag = str(response.get("ETag", etag))
    return FetchedImage(data=data, etag=etag.strip('"'), content_length=len(data))


def _read_capped(body: Any, *, max_bytes: int, expected: int | None, deadline: float, uri: str) -> bytes:
    chunks: list[bytes] = []
    total = 0
    while True:
        if time.monotonic() > deadline:
            raise StorageUnavailable(f"S3 download of {uri} ran out of time after {total} bytes")
        chunk = _read_some(body, CHUNK_BYTES)
        if not chunk:
            break
        total += len(chunk)
        _check_size(total, max_bytes, uri, streaming=True)
        chunks.append(chunk)
    if expected is not None and total != expected:
        raise _Retry(f"the body of {uri} ended after {total} of {expected} bytes")
    return b"".join(chunks)


def _read_some(body: Any, amt: int) -> bytes:
    # StreamingBody.read(n) loops until n bytes arrive, so a server trickling bytes could
    # hold it far past the deadline; urllib3's read1 returns after one socket read, each
    # bounded by the read timeout. botocore's own set_socket_timeout reaches the same attribute.
    read1 = getattr(getattr(body, "_raw_stream", None), "read1", None)
    try:
        return bytes(read1(amt)) if read1 is not None else bytes(body.read(amt))
    except (*_TRANSPORT_ERRORS, urllib3.exceptions.HTTPError, OSError) as exc:
        raise _Retry(f"{type(exc).__name__}: {exc}") from exc


def _check_size(size: int, max_bytes: int, uri: str, *, streaming: bool = False) -> None:
    if size > max_bytes:
        what = f"more than {size} bytes" if streaming else f"{size} bytes"
        raise ImageTooLarge(f"{uri} is {what}; the limit is {max_bytes}")


def _call(method: Any, uri: str, **kwargs: Any) -> Any:
    try:
        return method(**kwargs)
    except ClientError as exc:
        raise _map_client_error(exc, uri) from exc
    except _TRANSPORT_ERRORS as exc:
        raise _Retry(f"{type(exc).__name__}: {exc}") from exc


def _map_client_error(exc: ClientError, uri: str) -> Exception:
    error = exc.response.get("Error", {})
    code = str(error.get("Code", ""))
    status = int(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode") or 0)
    if code == "NoSuchBucket":
        return ImageNotFound(f"bucket {uri[5:].split('/', 1)[0]!r} does not exist")
    if code in ("NoSuchKey", "NotFound") or status == 404:
        return ImageNotFound(f"{uri} does not exist")
    if code == "AccessDenied" or status == 403:
        return ImageAccessDenied(f"the workers may not read {uri} ({code or status})")
    if code == "PreconditionFailed" or status == 412:
        return _Retry(f"{uri} changed while it was being fetched")
    if code in _TRANSIENT_CODES or status == 429 or status >= 500:
        return _Retry(f"S3 answered {code or status}")
    return JobError(f"S3 answered {code or status} for {uri}: {error.get('Message', '')}".rstrip(": "))


def _bucket_exists(client: Any, bucket: str) -> bool:
    try:
        client.head_bucket(Bucket=bucket)
    except ClientError as exc:
        return int(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode") or 0) != 404
    except _TRANSPORT_ERRORS:
        pass
    return True
