"""API keys: tenants' credentials, kept in Redis as hashes only, and their bucket grants.

A key reads ``cvk_<id>_<secret>``: ``id`` (12 hex digits) names the record, ``secret``
(32 random bytes, URL-safe base64) proves possession. Redis keeps, under ``cv:apikey:{id}``,
the tenant, the grants, the scopes, the dates and the SHA-256 of the whole key, never the key
itself; ``cv:apikeys`` is the set of ids. A 256-bit random secret needs no slow hash: a
stolen hash cannot be reversed by guessing.

Bucket grants are ``bucket`` (any key in it), ``bucket/prefix`` (keys that start with
``prefix``, compared literally, as S3 and IAM do: ``b/photos`` also covers
``b/photos-old/x``; grant ``b/photos/`` for a folder) or ``*`` (every bucket). A key with
no grant may submit nothing: access is always explicit.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import re
import secrets
from collections.abc import Iterable, Mapping
from typing import Any
from dataclasses import dataclass

import redis

from core.errors import Forbidden, InvalidField, Unauthorized
from core.jobs import now_rfc3339
from core.names import KEY_PREFIX as P
from core.redistext import text
from core.s3uri import parse_s3_uri, validate_bucket_name
from core.settings import Settings

KEY_SCHEME = "cvk"
ALL_BUCKETS = "*"
SCOPES = frozenset({"operator"})
"""``operator``: cross-tenant operational views (``/v1/stats``, ``/metrics`` when not public)."""

_ID_RE = re.compile(r"[0-9a-f]{12}")
_TENANT_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
_KEY_RE = re.compile(r"cvk_([0-9a-f]{12})_([A-Za-z0-9_-]{43})")


@dataclass(frozen=True)
class ApiKey:
    """An API key's record (never the clear key)."""

    id: str
    tenant: str
    buckets: tuple[str, ...]
    scopes: tuple[str, ...]
    created_at: str
    revoked_at: str | None = None

    @property
    def revoked(self) -> bool:
        return self.revoked_at is not None


def _hash(clear_key: str) -> str:
    return hashlib.sha256(clear_key.encode()).hexdigest()


def validate_tenant(tenant: str) -> str:
    """Return ``tenant`` when it is 1 to 64 letters, digits, ``.``, ``_`` or ``-``."""
    if not _TENANT_RE.fullmatch(tenant):
        raise InvalidField("a tenant is 1 to 64 letters, digits, '.', '_' or '-'", code="invalid_tenant")
    return tenant


def parse_grants(raw: Iterable[str]) -> tuple[str, ...]:
    """Validate bucket grants (``bucket``, ``bucket/prefix`` or ``*``); return them deduplicated."""
    grants: list[str] = []
    for grant in (g.strip() for g in raw):
        if not grant:
            continue
        if grant != ALL_BUCKETS:
            bucket, _, prefix = grant.partition("/")
            validate_bucket_name(bucket)
            if "," in prefix or any(ord(ch) < 32 for ch in prefix):
                raise InvalidField(f"grant {grant!r} has a comma or a control character", code="invalid_grant")
            if any(part in (".", "..") for part in prefix.split("/")[:-1]):
                raise InvalidField(f"grant {grant!r} has a '.' or '..' segment", code="invalid_grant")
        if grant not in grants:
            grants.append(grant)
    return tuple(grants)


def parse_scopes(raw: Iterable[str]) -> tuple[str, ...]:
    """Validate scopes against the known ones."""
    scopes = tuple(dict.fromkeys(s.strip() for s in raw if s.strip()))
    unknown = set(scopes) - SCOPES
    if unknown:
        raise InvalidField(f"unknown scope(s) {sorted(unknown)}; known: {sorted(SCOPES)}", code="invalid_scope")
    return scopes


def bucket_allowed(grants: Iterable[str], bucket: str, key: str) -> bool:
    """Return whether ``grants`` cover the object ``bucket``/``key``."""
    # A prefix grant never covers "." or ".." segments: some S3-protocol servers and proxies
    # normalise them, which would step outside the prefix.
    dotted = any(part in (".", "..") for part in key.split("/"))
    for grant in grants:
        if grant == ALL_BUCKETS:
            return True
        g_bucket, slash, prefix = grant.partition("/")
        if g_bucket != bucket:
            continue
        if not slash or not prefix:
            return True
        if key.startswith(prefix) and not dotted:
            return True
    return False


class KeyStore:
    """Create, authenticate, list and revoke API keys in Redis."""

    def __init__(self, client: redis.Redis) -> None:
        self.redis = client

    @staticmethod
    def record_key(key_id: str) -> str:
        return f"{P}apikey:{key_id}"

    def create(self, tenant: str, *, buckets: Iterable[str] = (), scopes: Iterable[str] = ()) -> tuple[ApiKey, str]:
        """Create a key; return its record and the clear key (shown once, never stored)."""
        record = ApiKey(
            id="", tenant=validate_tenant(tenant), buckets=parse_grants(buckets), scopes=parse_scopes(scopes),
            created_at=now_rfc3339(),
        )
        while True:
            key_id = secrets.token_hex(6)
            clear = f"{KEY_SCHEME}_{key_id}_{secrets.token_urlsafe(32)}"
            fields = {
                "tenant": record.tenant, "hash": _hash(clear), "buckets": json.dumps(record.buckets),
                "scopes": json.dumps(record.scopes), "created_at": record.created_at,
            }
            # HSETNX on the hash field claims the id; a (vanishingly rare) clash draws again.
            if self.redis.hsetnx(self.record_key(key_id), "hash", fields["hash"]):
                break
        pipe = self.redis.pipeline(transaction=True)
        pipe.hset(self.record_key(key_id), mapping=dict(fields))  # type: ignore[arg-type]
        pipe.sadd(f"{P}apikeys", key_id)
        pipe.execute()
        return ApiKey(**{**record.__dict__, "id": key_id}), clear

    def authenticate(self, clear_key: str) -> ApiKey:
        """Return the live key ``clear_key`` stands for; raise ``Unauthorized`` otherwise."""
        match = _KEY_RE.fullmatch(clear_key)
        if not match:
            raise Unauthorized("the API key is not valid", code="invalid_api_key")
        fields = self.redis.hgetall(self.record_key(match.group(1)))
        stored = text(fields.get(b"hash", b""))
        # Compare even when the id is unknown, so timing says nothing about which ids exist.
        if not hmac.compare_digest(stored or "0" * 64, _hash(clear_key)) or not stored:
            raise Unauthorized("the API key is not valid", code="invalid_api_key")
        key = _record(match.group(1), fields)
        if key.revoked:
            raise Unauthorized("the API key has been revoked", code="revoked_api_key")
        return key

    def get(self, key_id: str) -> ApiKey | None:
        """Return the record of ``key_id``, or None."""
        if not _ID_RE.fullmatch(key_id):
            return None
        fields = self.redis.hgetall(self.record_key(key_id))
        return _record(key_id, fields) if fields.get(b"tenant") else None

    def list(self) -> list[ApiKey]:
        """Return every key's record, oldest first."""
        ids = sorted(text(m) for m in self.redis.smembers(f"{P}apikeys"))
        keys = [k for k in (self.get(i) for i in ids) if k is not None]
        return sorted(keys, key=lambda k: (k.created_at, k.id))

    def revoke(self, key_id: str) -> ApiKey | None:
        """Revoke a key (its record stays, for the audit trail); None when there is no such key."""
        key = self.get(key_id)
        if key is None:
            return None
        if not key.revoked:
            self.redis.hset(self.record_key(key_id), "revoked_at", now_rfc3339())
        return self.get(key_id)


def _record(key_id: str, fields: Mapping[Any, Any]) -> ApiKey:
    def field(name: str) -> str:
        return text(fields.get(name.encode(), b""))

    return ApiKey(
        id=key_id,
        tenant=field("tenant"),
        buckets=tuple(json.loads(field("buckets") or "[]")),
        scopes=tuple(json.loads(field("scopes") or "[]")),
        created_at=field("created_at"),
        revoked_at=field("revoked_at") or None,
    )


def check_image_allowed(grants: Iterable[str], uri: str) -> None:
    """Raise ``Forbidden`` (``bucket_not_allowed``) unless ``grants`` cover the image ``uri``."""
    bucket, key = parse_s3_uri(uri)
    if not bucket_allowed(grants, bucket, key):
        raise Forbidden(
            f"this API key may not read s3://{bucket}/ under that key; ask for a grant", code="bucket_not_allowed"
        )


def create_key_for_demo(settings: Settings, *, bucket: str, tenant: str = "demo") -> str:
    """Create a key of ``tenant`` that may read ``bucket`` in the configured Redis; return it in clear."""
    client = redis.Redis.from_url(settings.redis_url, socket_connect_timeout=2, socket_timeout=5)
    try:
        return KeyStore(client).create(tenant, buckets=[bucket])[1]
    finally:
        client.close()
