"""API keys in a real Redis: hashes only, constant-time checks, revocation, grants; the CLI."""

from __future__ import annotations

import json
import subprocess
import sys
import time

import pytest
import redis as redis_lib

from core.errors import Forbidden, InvalidField, Unauthorized
from core.jobs import rfc3339_to_epoch
from core.keys import KeyStore, bucket_allowed, check_image_allowed, parse_grants
from core.settings import Settings
from tests.helpers import verifier_env


@pytest.fixture()
def keys(redis_client: redis_lib.Redis) -> KeyStore:
    return KeyStore(redis_client)


def _all_redis_bytes(client: redis_lib.Redis) -> bytes:
    """Return every key name and hash field value under cv:apikey*, concatenated."""
    out = b""
    for name in client.scan_iter("cv:apikey*"):
        out += name
        if client.type(name) == b"hash":
            out += b"".join(k + v for k, v in client.hgetall(name).items())
        else:
            out += b"".join(client.smembers(name))
    return out


def test_key_lifecycle_and_nothing_clear_in_redis(keys: KeyStore, redis_client: redis_lib.Redis) -> None:
    # Given a new key
    record, clear = keys.create("acme", buckets=["photos", "uploads/acme/"], scopes=["operator"])
    assert clear.startswith(f"cvk_{record.id}_")
    # Then Redis holds neither the clear key nor its secret
    stored = _all_redis_bytes(redis_client)
    secret = clear.split("_", 2)[2]
    assert clear.encode() not in stored and secret.encode() not in stored
    # When it authenticates, it is the tenant's, with its grants and scopes
    key = keys.authenticate(clear)
    assert (key.tenant, key.buckets, key.scopes) == ("acme", ("photos", "uploads/acme/"), ("operator",))
    # And a listing shows the record but no secret material
    listed = [k for k in keys.list() if k.id == record.id]
    assert listed and "hash" not in listed[0].__dict__
    # When it is revoked, it no longer authenticates
    assert keys.revoke(record.id).revoked  # type: ignore[union-attr]
    with pytest.raises(Unauthorized) as exc:
        keys.authenticate(clear)
    assert exc.value.code == "revoked_api_key"
    assert keys.revoke("000000000000") is None


@pytest.mark.parametrize("bad", ["", "nope", "cvk_zzz_abc", "Bearer x", "cvk_0123456789ab_" + "A" * 43])
def test_wrong_keys_are_refused(keys: KeyStore, bad: str) -> None:
    with pytest.raises(Unauthorized) as exc:
        keys.authenticate(bad)
    assert exc.value.code == "invalid_api_key"


def test_a_wrong_secret_for_a_real_id_is_refused(keys: KeyStore) -> None:
    record, clear = keys.create("acme", buckets=["*"])
    forged = clear[:-1] + ("A" if clear[-1] != "A" else "B")
    with pytest.raises(Unauthorized):
        keys.authenticate(forged)


@pytest.mark.parametrize(
    ("grants", "bucket", "key", "allowed"),
    [
        (["*"], "any-bucket", "x.jpg", True),
        (["photos"], "photos", "a/b.jpg", True),
        (["photos"], "photos2", "a/b.jpg", False),
        (["photos/acme/"], "photos", "acme/a.jpg", True),
        (["photos/acme/"], "photos", "other/a.jpg", False),
        (["photos/acme/"], "photos", "acme/../other/a.jpg", False),
        (["photos/acme/"], "photos", "acme/./a.jpg", False),
        (["photos/acme"], "photos", "acme-old/a.jpg", True),  # literal prefix, as in S3 and IAM
        (["a-bucket", "photos/acme/"], "photos", "acme/x", True),
        ([], "photos", "a.jpg", False),
    ],
)
def test_bucket_grants(grants: list[str], bucket: str, key: str, allowed: bool) -> None:
    assert bucket_allowed(grants, bucket, key) is allowed


def test_check_image_allowed_raises_forbidden() -> None:
    with pytest.raises(Forbidden) as exc:
        check_image_allowed(("photos/acme/",), "s3://photos/other/a.jpg")
    assert exc.value.code == "bucket_not_allowed" and exc.value.status == 403


@pytest.mark.parametrize("grant", ["Bad_Bucket", "ab", "photos/a/../b/x", "photos/a,b"])
def test_bad_grants_are_refused(grant: str) -> None:
    with pytest.raises(InvalidField):
        parse_grants([grant])


def test_bad_tenant_and_scope_are_refused(keys: KeyStore) -> None:
    with pytest.raises(InvalidField):
        keys.create("no spaces", buckets=["*"])
    with pytest.raises(InvalidField):
        keys.create("acme", scopes=["root"])


def test_cli_create_list_revoke(settings: Settings) -> None:
    env = verifier_env(settings)

    def verifier(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "verifier", "keys", *args], env=env, capture_output=True,
                              text=True, timeout=60)

    # Given a key made with the CLI
    created = verifier("create", "--tenant", "cli-tenant", "--buckets", "photos,uploads/x/", "--scopes", "operator")
    assert created.returncode == 0, created.stderr
    clear = created.stdout.strip()
    key_id = clear.split("_")[1]
    # Then the listing shows it, never the clear key or its hash
    listed = verifier("list", "--json")
    rows = [json.loads(line) for line in listed.stdout.splitlines()]
    mine = [r for r in rows if r["id"] == key_id]
    assert len(mine) == 1
    created_at = mine[0].pop("created_at")
    assert mine == [{"id": key_id, "tenant": "cli-tenant", "buckets": ["photos", "uploads/x/"],
                     "scopes": ["operator"], "revoked_at": None}]
    created_epoch = rfc3339_to_epoch(created_at)  # an RFC 3339 time of about now
    assert created_epoch is not None and abs(created_epoch - time.time()) < 600
    plain = verifier("list").stdout
    assert clear not in listed.stdout + plain and clear.split("_", 2)[2] not in plain
    assert "hash" not in listed.stdout
    # When revoked, the listing says so
    assert verifier("revoke", key_id).returncode == 0
    rows = [json.loads(line) for line in verifier("list", "--json").stdout.splitlines()]
    assert [r["revoked_at"] for r in rows if r["id"] == key_id][0]
    assert verifier("revoke", "ffffffffffff").returncode == 1
    assert verifier("create", "--tenant", "t", "--scopes", "root").returncode == 2
