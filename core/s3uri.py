"""Parse and validate ``s3://bucket/key`` image URIs (no boto3: the API uses it too).

Codes, all ``InvalidField`` (422):

- ``invalid_image_uri``: not a string, not ``s3://``, or no ``/`` between bucket and key;
- ``invalid_bucket_name``: the bucket breaks S3's naming rules for general purpose buckets;
- ``invalid_object_key``: the key is empty, over 1024 bytes of UTF-8, not encodable as
  UTF-8, or holds a control character.

The key is everything after the first ``/`` that follows the bucket, taken literally:
``?``, ``#`` and ``%`` are ordinary key characters in S3, so nothing is URL-decoded.
"""

from __future__ import annotations

import re
import unicodedata

from core.errors import InvalidField

SCHEME = "s3://"
MAX_KEY_BYTES = 1024

_BUCKET_RE = re.compile(r"[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]")
# Any dotted quad of digits (S3 rejects "01.2.3.4" as well as "192.168.5.4").
_IP_LIKE_RE = re.compile(r"\d+\.\d+\.\d+\.\d+")
# Reserved by S3 for access points, Object Lambda, directory and table buckets.
_RESERVED_PREFIXES = ("xn--", "sthree-", "amzn-s3-demo-")
_RESERVED_SUFFIXES = ("-s3alias", "--ol-s3", ".mrap", "--x-s3", "--table-s3")


def parse_s3_uri(uri: object) -> tuple[str, str]:
    """Split an ``s3://bucket/key`` URI into a valid bucket name and object key."""
    if not isinstance(uri, str) or not uri.startswith(SCHEME):
        raise InvalidField("image must be an s3://bucket/key URI", code="invalid_image_uri")
    bucket, slash, key = uri[len(SCHEME) :].partition("/")
    if not slash:
        raise InvalidField("image must be an s3://bucket/key URI", code="invalid_image_uri")
    validate_bucket_name(bucket)
    validate_object_key(key)
    return bucket, key


def validate_bucket_name(bucket: str) -> None:
    """Raise ``invalid_bucket_name`` unless ``bucket`` follows S3's naming rules."""
    why = _bucket_problem(bucket)
    if why:
        raise InvalidField(f"invalid S3 bucket name {bucket[:80]!r}: {why}", code="invalid_bucket_name")


def validate_object_key(key: str) -> None:
    """Raise ``invalid_object_key`` unless ``key`` is 1 to 1024 UTF-8 bytes without control characters."""
    if not key:
        raise InvalidField("the S3 object key is empty", code="invalid_object_key")
    try:
        size = len(key.encode("utf-8"))
    except UnicodeEncodeError:  # lone surrogates
        raise InvalidField("the S3 object key is not valid UTF-8", code="invalid_object_key") from None
    if size > MAX_KEY_BYTES:
        raise InvalidField(f"the S3 object key is {size} bytes; at most {MAX_KEY_BYTES}", code="invalid_object_key")
    if any(unicodedata.category(ch) == "Cc" for ch in key):
        raise InvalidField("the S3 object key contains a control character", code="invalid_object_key")


def _bucket_problem(bucket: str) -> str | None:
    if not 3 <= len(bucket) <= 63:
        return "must be 3 to 63 characters"
    if not _BUCKET_RE.fullmatch(bucket):
        return "use lowercase letters, digits, dots and hyphens, starting and ending with a letter or digit"
    if ".." in bucket:
        return "must not contain two adjacent dots"
    if bucket.startswith(_RESERVED_PREFIXES) or bucket.endswith(_RESERVED_SUFFIXES):
        return "uses a prefix or suffix that S3 reserves"
    if _IP_LIKE_RE.fullmatch(bucket):
        return "must not be formatted as an IP address"
    return None
