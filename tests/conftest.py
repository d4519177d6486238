"""Fixtures: a real Redis, a real S3-protocol server (moto's server mode), settings."""

from __future__ import annotations

import io
import os
import uuid
from collections.abc import Callable, Iterator

import boto3
import pytest
import redis as redis_lib
from moto.server import ThreadedMotoServer
from PIL import Image

from core.settings import Settings
from tests.helpers import free_port

# Credentials for the local S3 server only; boto3 reads them from the environment in
# every process the tests start (workers included).
os.environ.setdefault("AWS_ACCESS_KEY_ID", "testing")
os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "testing")
os.environ.setdefault("AWS_DEFAULT_REGION", "us-east-1")
os.environ.pop("AWS_PROFILE", None)

REDIS_URL = os.environ.get("VERIFIER_TEST_REDIS_URL", "redis://127.0.0.1:6379/9")


@pytest.fixture(scope="session")
def redis_url() -> str:
    """Return the URL of the test Redis database, emptied once per session."""
    client = redis_lib.Redis.from_url(REDIS_URL)
    try:
        client.ping()
    except redis_lib.ConnectionError:
        pytest.exit(f"Redis is not answering at {REDIS_URL}; .ci/run starts one", returncode=2)
    client.flushdb()
    client.close()
    return REDIS_URL


@pytest.fixture()
def redis_client(redis_url: str) -> Iterator[redis_lib.Redis]:
    client = redis_lib.Redis.from_url(redis_url)
    yield client
    client.close()


@pytest.fixture(scope="session")
def s3_endpoint() -> Iterator[str]:
    """Start moto's S3 server on 127.0.0.1 for the session and return its endpoint URL."""
    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    yield f"http://127.0.0.1:{port}"
    server.stop()


@pytest.fixture()
def s3_client(s3_endpoint: str):  # type: ignore[no-untyped-def]
    return boto3.client("s3", endpoint_url=s3_endpoint, region_name="us-east-1")


@pytest.fixture()
def bucket(s3_client) -> str:  # type: ignore[no-untyped-def]
    """Create a fresh bucket for the test and return its name."""
    name = f"test-{uuid.uuid4().hex[:12]}"
    s3_client.create_bucket(Bucket=name)
    return name


@pytest.fixture()
def put_image(s3_client, bucket: str) -> Callable[..., str]:  # type: ignore[no-untyped-def]
    """Upload an image (or raw bytes) and return its ``s3://`` URI."""

    def put(key: str | None = None, *, data: bytes | None = None, size=(64, 48), color=(200, 30, 30), fmt="JPEG") -> str:
        key = key or f"img/{uuid.uuid4().hex}.jpg"
        if data is None:
            buf = io.BytesIO()
            Image.new("RGB", size, color).save(buf, format=fmt)
            data = buf.getvalue()
        s3_client.put_object(Bucket=bucket, Key=key, Body=data)
        return f"s3://{bucket}/{key}"

    return put


@pytest.fixture()
def settings(redis_url: str, s3_endpoint: str) -> Settings:
    """Return settings pointing at the test Redis and S3 server, with the tiny random model."""
    return Settings.from_env(
        {},
        redis_url=redis_url,
        s3_endpoint_url=s3_endpoint,
        model="random:tiny",
        batch_max_wait_ms=5,
        webhook_allowlist=("127.0.0.0/8",),
        webhook_retry_delays=(0.2, 0.4),
    )


@pytest.fixture()
def make_key(redis_url: str) -> Iterator[Callable[..., tuple[str, str]]]:
    """Create API keys in the test Redis; return ``(key_id, clear_key)``; delete them afterwards."""
    from core.keys import KeyStore

    client = redis_lib.Redis.from_url(redis_url)
    keys = KeyStore(client)
    made: list[str] = []

    def make(tenant: str = "default", *, buckets: tuple[str, ...] = ("*",), scopes: tuple[str, ...] = ("operator",)) -> tuple[str, str]:
        record, clear = keys.create(tenant, buckets=buckets, scopes=scopes)
        made.append(record.id)
        return record.id, clear

    yield make
    for key_id in made:
        client.delete(keys.record_key(key_id))
        client.srem("cv:apikeys", key_id)
    client.close()


@pytest.fixture()
def api_key(make_key: Callable[..., tuple[str, str]]) -> str:
    """Return a clear API key of tenant "default" with every bucket and the operator scope."""
    return make_key()[1]


@pytest.fixture()
def auth_headers(api_key: str) -> dict[str, str]:
    """Return the headers that authenticate as ``api_key``."""
    return {"Authorization": f"Bearer {api_key}"}
