"""Image fetch and decode against a real S3-protocol server (moto) and tiny HTTP servers."""

from __future__ import annotations

import io
import json
import socket
import struct
import threading
import time
import urllib.request
import uuid
import warnings
import zlib
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Literal

import numpy as np
import pytest
from PIL import Image, ImageFile

from core.errors import InvalidField, JobError, StorageUnavailable
from core.s3uri import parse_s3_uri
from core.settings import Settings
from tests.helpers import free_port
from worker.images import create_s3_client, decode_image, fetch_image, load_image

MiB = 1024 * 1024


# --- helpers ------------------------------------------------------------------------------


def encode(img: Image.Image, fmt: str = "JPEG", **params: Any) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format=fmt, **params)
    return buf.getvalue()


def noisy_jpeg(size: tuple[int, int] = (256, 192)) -> bytes:
    return encode(Image.effect_noise(size, 60).convert("RGB"), quality=90)


def huge_png(width: int, height: int) -> bytes:
    """Return a real 1-bit PNG of ``width`` x ``height`` black pixels (it compresses to a few KiB)."""
    row = bytes(1 + (width + 7) // 8)  # filter byte + packed bits
    compressor = zlib.compressobj(9)
    idat = b"".join(compressor.compress(row) for _ in range(height)) + compressor.flush()

    def chunk(kind: bytes, payload: bytes) -> bytes:
        return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload))

    ihdr = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")


def corrupt_scan(jpeg: bytes) -> bytes:
    """Flip bytes all through the entropy-coded data after the SOS marker."""
    data = bytearray(jpeg)
    for i in range(jpeg.index(b"\xff\xda") + 20, len(data) - 2, 7):
        data[i] ^= 0xFF
    return bytes(data)


def pixel(img: Image.Image, xy: tuple[int, int]) -> tuple[int, ...]:
    value = img.getpixel(xy)
    assert isinstance(value, tuple)
    return value


def settings_for(endpoint: str, **overrides: Any) -> Settings:
    return Settings.from_env({}, s3_endpoint_url=endpoint, **overrides)


def count_calls(client: Any, operation: str) -> list[dict[str, Any]]:
    """Record each request ``client`` is about to send for ``operation`` (url, headers, ...)."""
    calls: list[dict[str, Any]] = []
    client.meta.events.register(f"before-call.s3.{operation}", lambda **kw: calls.append(kw["params"]))
    return calls


@pytest.fixture()
def s3_settings(s3_endpoint: str) -> Settings:
    return settings_for(s3_endpoint, s3_retries=2)


@pytest.fixture()
def client(s3_settings: Settings) -> Any:
    return create_s3_client(s3_settings)


class ScriptedS3:
    """A tiny S3-style server on 127.0.0.1 serving one object, after scripted failures."""

    def __init__(self, body: bytes, *, failures: int = 0, head_length: int | None = None, drip_s: float = 0.0) -> None:
        self.body = body
        self.etag = '"v1"'
        self.failures = failures
        self.head_length = len(body) if head_length is None else head_length
        self.drip_s = drip_s
        self.requests: list[str] = []
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.server.daemon_threads = True
        self.endpoint = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        fake = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: Any) -> None:
                pass

            def do_HEAD(self) -> None:
                if not fake._fail(self, head=True):
                    self._send(200, b"", length=fake.head_length)

            def do_GET(self) -> None:
                if fake._fail(self, head=False):
                    return
                if self.headers.get("If-Match") not in (None, fake.etag):
                    self._send(412, _error_xml("PreconditionFailed"))
                    return
                self.send_response(200)
                self.send_header("Content-Length", str(len(fake.body)))
                self.send_header("ETag", fake.etag)
                self.end_headers()
                try:
                    step = 1024 if fake.drip_s else len(fake.body)
                    for start in range(0, len(fake.body), step):
                        self.wfile.write(fake.body[start : start + step])
                        self.wfile.flush()
                        time.sleep(fake.drip_s)
                except OSError:  # the client hung up, as it should past a cap
                    pass

            def _send(self, status: int, body: bytes, *, length: int | None = None) -> None:
                self.send_response(status)
                self.send_header("Content-Length", str(len(body) if length is None else length))
                self.send_header("ETag", fake.etag)
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(body)

        return Handler

    def _fail(self, handler: BaseHTTPRequestHandler, *, head: bool) -> bool:
        self.requests.append(handler.command)
        if self.failures <= 0:
            return False
        self.failures -= 1
        body = b"" if head else _error_xml("SlowDown")
        handler.send_response(503)
        handler.send_header("Content-Length", str(len(body)))
        handler.end_headers()
        handler.wfile.write(body)
        return True


def _error_xml(code: str) -> bytes:
    return f'<?xml version="1.0" encoding="UTF-8"?><Error><Code>{code}</Code><Message>{code}</Message></Error>'.encode()


@pytest.fixture()
def scripted_s3() -> Iterator[Callable[..., ScriptedS3]]:
    servers: list[ScriptedS3] = []

    def start(body: bytes, **kwargs: Any) -> ScriptedS3:
        servers.append(ScriptedS3(body, **kwargs))
        return servers[-1]

    yield start
    for server in servers:
        server.close()


# --- s3:// URIs ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("uri", "expected"),
    [
        ("s3://my-bucket/img/a.jpg", ("my-bucket", "img/a.jpg")),
        ("s3://a.b-c/k", ("a.b-c", "k")),
        ("s3://abc/dir/with space/ü?x=1#frag%20", ("abc", "dir/with space/ü?x=1#frag%20")),
        ("s3://abc//leading-slash", ("abc", "/leading-slash")),
        ("s3://" + "b" * 63 + "/" + "k" * 1024, ("b" * 63, "k" * 1024)),
    ],
)
def test_parse_s3_uri_accepts(uri: str, expected: tuple[str, str]) -> None:
    assert parse_s3_uri(uri) == expected


@pytest.mark.parametrize(
    ("uri", "code"),
    [
        (None, "invalid_image_uri"),
        ("", "invalid_image_uri"),
        ("https://bucket/key", "invalid_image_uri"),
        ("S3://bucket/key", "invalid_image_uri"),
        (" s3://bucket/key", "invalid_image_uri"),
        ("s3://bucket", "invalid_image_uri"),
        ("s3:///key", "invalid_bucket_name"),
        ("s3://ab/key", "invalid_bucket_name"),
        ("s3://" + "b" * 64 + "/key", "invalid_bucket_name"),
        ("s3://My-Bucket/key", "invalid_bucket_name"),
        ("s3://bucket_name/key", "invalid_bucket_name"),
        ("s3://-bucket/key", "invalid_bucket_name"),
        ("s3://bucket-/key", "invalid_bucket_name"),
        ("s3://buck..et/key", "invalid_bucket_name"),
        ("s3://192.168.5.4/key", "invalid_bucket_name"),
        ("s3://xn--bucket/key", "invalid_bucket_name"),
        ("s3://bucket-s3alias/key", "invalid_bucket_name"),
        ("s3://bucket/", "invalid_object_key"),
        ("s3://bucket/" + "k" * 1025, "invalid_object_key"),
        ("s3://bucket/" + "é" * 513, "invalid_object_key"),  # 1026 bytes of UTF-8
        ("s3://bucket/a\nb", "invalid_object_key"),
        ("s3://bucket/a\x00b", "invalid_object_key"),
        ("s3://bucket/a\x7fb", "invalid_object_key"),
        ("s3://bucket/a\ud800b", "invalid_object_key"),
    ],
)
def test_parse_s3_uri_rejects(uri: Any, code: str) -> None:
    with pytest.raises(InvalidField) as info:
        parse_s3_uri(uri)
    assert info.value.code == code
    assert info.value.status == 422


# --- fetch from the moto server ------------------------------------------------------------


def test_fetch_returns_bytes_and_etag(client: Any, put_image: Callable[..., str], s3_client: Any, bucket: str) -> None:
    data = noisy_jpeg()
    uri = put_image("photos/a.jpg", data=data)

    fetched = fetch_image(client, uri, max_bytes=MiB, retries=0)

    assert fetched.data == data
    assert fetched.content_length == len(data)
    assert f'"{fetched.etag}"' == s3_client.head_object(Bucket=bucket, Key="photos/a.jpg")["ETag"]


def test_missing_key_is_image_not_found(client: Any, bucket: str) -> None:
    with pytest.raises(JobError) as info:
        fetch_image(client, f"s3://{bucket}/nope.jpg", max_bytes=MiB, retries=2)
    assert info.value.code == "image_not_found"
    assert "nope.jpg" in info.value.message


def test_missing_bucket_is_image_not_found_naming_the_bucket(client: Any) -> None:
    name = f"absent-{uuid.uuid4().hex[:8]}"
    with pytest.raises(JobError) as info:
        fetch_image(client, f"s3://{name}/a.jpg", max_bytes=MiB, retries=2)
    assert info.value.code == "image_not_found"
    assert f"bucket '{name}'" in info.value.message


@pytest.fixture()
def denied_object(s3_endpoint: str, bucket: str, put_image: Callable[..., str]) -> Iterator[tuple[Any, str]]:
    """Return an object and an S3 client for an IAM user denied s3:GetObject on it, with moto enforcing IAM.

    moto checks signatures and IAM policies (not bucket policies) once its no-auth request
    allowance is spent; /moto-api/reset-auth sets that allowance on the running server.
    """
    import boto3

    uri = put_image()
    iam = boto3.client("iam", endpoint_url=s3_endpoint, region_name="us-east-1")
    user = f"reader-{uuid.uuid4().hex[:8]}"
    iam.create_user(UserName=user)
    policy = {
        "Version": "2012-10-17",
        "Statement": [
            {"Effect": "Allow", "Action": "s3:*", "Resource": "*"},
            {"Effect": "Deny", "Action": "s3:GetObject", "Resource": f"arn:aws:s3:::{bucket}/*"},
        ],
    }
    iam.put_user_policy(UserName=user, PolicyName="deny-get", PolicyDocument=json.dumps(policy))
    key = iam.create_access_key(UserName=user)["AccessKey"]
    client = boto3.session.Session(
        aws_access_key_id=key["AccessKeyId"], aws_secret_access_key=key["SecretAccessKey"]
    ).client("s3", endpoint_url=s3_endpoint, region_name="us-east-1")

    def set_no_auth_allowance(value: str) -> None:
        request = urllib.request.Request(
            f"{s3_endpoint}/moto-api/reset-auth", data=value.encode(), headers={"Content-Type": "text/plain"}
        )
        urllib.request.urlopen(request, timeout=5).close()

    set_no_auth_allowance("0")
    try:
        yield client, uri
    finally:
        set_no_auth_allowance("inf")


def test_access_denied_is_image_access_denied(denied_object: tuple[Any, str]) -> None:
    # Given an object the reader's IAM policy denies
    client, uri = denied_object
    head_bucket = client.head_bucket(Bucket=uri[5:].split("/")[0])  # the user is real and may list
    assert head_bucket["ResponseMetadata"]["HTTPStatusCode"] == 200
    # When the worker fetches it with those credentials, Then S3 answers 403
    with pytest.raises(JobError) as info:
        fetch_image(client, uri, max_bytes=MiB, retries=2, backoff_base=0.01)
    assert info.value.code == "image_access_denied"


def test_over_byte_cap_by_head_never_gets(client: Any, put_image: Callable[..., str]) -> None:
    uri = put_image(data=b"x" * 5000)
    gets = count_calls(client, "GetObject")

    with pytest.raises(JobError) as info:
        fetch_image(client, uri, max_bytes=4999, retries=2)

    assert info.value.code == "image_too_large"
    assert gets == []


def test_over_byte_cap_while_streaming(client: Any, scripted_s3: Callable[..., ScriptedS3]) -> None:
    # Given a server whose HEAD claims 100 bytes but whose GET sends 8 MiB
    server = scripted_s3(b"\xff" * (8 * MiB), head_length=100)
    lying = create_s3_client(settings_for(server.endpoint))
    # When the fetch streams it, Then it stops past the cap
    with pytest.raises(JobError) as info:
        fetch_image(lying, "s3://bucket/big.jpg", max_bytes=MiB, retries=2)
    assert info.value.code == "image_too_large"
    assert server.requests == ["HEAD", "GET"]


def test_object_replaced_between_head_and_get_is_refetched(
    client: Any, s3_client: Any, bucket: str, put_image: Callable[..., str]
) -> None:
    # Given an object that is overwritten right after the worker's HEAD
    old, new = noisy_jpeg((32, 32)), noisy_jpeg((48, 48))
    uri = put_image("swap.jpg", data=old)
    gets = count_calls(client, "GetObject")

    def overwrite_once(**_: Any) -> None:  # a before-call handler's return value would short-circuit the call
        if len(gets) == 1:
            s3_client.put_object(Bucket=bucket, Key="swap.jpg", Body=new)

    client.meta.events.register("before-call.s3.GetObject", overwrite_once)
    # When it fetches, Then If-Match turns the first GET into a 412 and the retry gets the new object
    fetched = fetch_image(client, uri, max_bytes=MiB, retries=2, backoff_base=0.01)
    assert fetched.data == new
    assert len(gets) == 2 and all("If-Match" in request["headers"] for request in gets)


def test_throttling_is_retried_until_success(scripted_s3: Callable[..., ScriptedS3]) -> None:
    data = noisy_jpeg()
    server = scripted_s3(data, failures=2)
    throttled = create_s3_client(settings_for(server.endpoint))

    fetched = fetch_image(throttled, "s3://bucket/a.jpg", max_bytes=MiB, retries=3, backoff_base=0.01)

    assert fetched.data == data and fetched.etag == "v1"
    assert server.requests == ["HEAD", "HEAD", "HEAD", "GET"]


def test_throttling_past_the_retries_is_storage_unavailable(scripted_s3: Callable[..., ScriptedS3]) -> None:
    server = scripted_s3(b"data", failures=100)
    throttled = create_s3_client(settings_for(server.endpoint))

    with pytest.raises(StorageUnavailable) as info:
        fetch_image(throttled, "s3://bucket/a.jpg", max_bytes=MiB, retries=2, backoff_base=0.01)
    assert info.value.code == "storage_unavailable"
    assert server.requests == ["HEAD"] * 3


@pytest.mark.timeout(30)
def test_unreachable_storage_is_storage_unavailable_after_retries() -> None:
    closed = create_s3_client(settings_for(f"http://127.0.0.1:{free_port()}"), connect_timeout=0.5)
    sends = count_calls(closed, "HeadObject")

    with pytest.raises(StorageUnavailable):
        fetch_image(closed, "s3://bucket/a.jpg", max_bytes=MiB, retries=3, backoff_base=0.01)
    assert len(sends) == 4  # one try and three retries, no hidden botocore retries


@pytest.mark.timeout(30)
def test_silent_server_times_out_and_is_storage_unavailable() -> None:
    # Given a server that accepts connections (via the backlog) but never answers
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(16)
        silent = create_s3_client(settings_for(f"http://127.0.0.1:{listener.getsockname()[1]}"), read_timeout=0.3)
        # When fetching, Then each attempt times out and the retries run out
        with pytest.raises(StorageUnavailable):
            fetch_image(silent, "s3://bucket/a.jpg", max_bytes=MiB, retries=1, backoff_base=0.01)


@pytest.mark.timeout(30)
def test_dripping_body_stops_at_the_deadline(scripted_s3: Callable[..., ScriptedS3]) -> None:
    # Given a server that sends 1 KiB every 0.1 s (never slow enough for a read timeout)
    server = scripted_s3(b"\x00" * (200 * 1024), drip_s=0.1)
    slow = create_s3_client(settings_for(server.endpoint))
    # When the fetch has a 1 s budget, Then it gives up instead of waiting 20 s
    with pytest.raises(StorageUnavailable) as info:
        fetch_image(slow, "s3://bucket/a.jpg", max_bytes=MiB, retries=3, timeout=1.0)
    assert "ran out of time" in info.value.message


def test_client_has_one_attempt_and_timeouts(s3_settings: Settings) -> None:
    config = create_s3_client(s3_settings, connect_timeout=1.5, read_timeout=4.0).meta.config
    assert (config.connect_timeout, config.read_timeout) == (1.5, 4.0)
    assert config.retries["mode"] == "standard" and config.retries["total_max_attempts"] == 1


# --- bad objects end to end: fetch from the bucket, then decode ----------------------------------

BAD_OBJECTS = [
    pytest.param(b"", "image_invalid", id="empty"),
    pytest.param(b"a caption is not an image\n", "image_invalid", id="text"),
    pytest.param(b"<!doctype html><html><body>Not Found</body></html>", "image_invalid", id="html"),
    pytest.param(noisy_jpeg()[:3000], "image_invalid", id="truncated-jpeg"),
    pytest.param(noisy_jpeg()[:-2], "image_invalid", id="jpeg-without-eoi"),
    pytest.param(corrupt_scan(noisy_jpeg()), "image_invalid", id="corrupt-jpeg"),
    pytest.param(encode(Image.effect_noise((64, 64), 60), "PNG")[:2000], "image_invalid", id="truncated-png"),
    pytest.param(b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 10 10\n", "image_invalid", id="eps-not-tried"),
    pytest.param(encode(Image.new("1", (2000, 1000)), "PNG"), "image_too_large", id="over-our-cap"),
]


@pytest.mark.parametrize(("data", "code"), BAD_OBJECTS)
def test_bad_objects_fail_with_their_code(
    client: Any, s3_settings: Settings, put_image: Callable[..., str], data: bytes, code: str
) -> None:
    uri = put_image(data=data)
    settings = Settings.from_env({}, s3_endpoint_url=s3_settings.s3_endpoint_url, max_image_pixels=1_000_000)

    with pytest.raises(JobError) as info:
        load_image(client, uri, settings, target_size=384)
    assert info.value.code == code


def test_pixel_bomb_is_refused_before_decoding(client: Any, s3_settings: Settings, put_image: Callable[..., str],
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    # Given a 20000x20000 PNG of a few KiB (400 Mpx; Pillow's own guard raises past 179 Mpx)
    data = huge_png(20_000, 20_000)
    assert len(data) < 100_000
    uri = put_image(data=data)
    # And a record of every pixel decode (ImageFile.load is where Pillow decodes a file's pixels)
    loads: list[tuple[int, int]] = []
    original_load = ImageFile.ImageFile.load

    def recording_load(self: ImageFile.ImageFile) -> Any:
        loads.append(self.size)
        return original_load(self)

    monkeypatch.setattr(ImageFile.ImageFile, "load", recording_load)
    # When loaded even with a cap above Pillow's, Then it is too large and no pixel was decoded
    settings = Settings.from_env({}, s3_endpoint_url=s3_settings.s3_endpoint_url, max_image_pixels=10**9)
    with pytest.raises(JobError) as info:
        load_image(client, uri, settings)
    assert info.value.code == "image_too_large"
    assert loads == []
    assert Image.MAX_IMAGE_PIXELS == 1024 * 1024 * 1024 // 4 // 3  # untouched
    # (The record does see a decode: a small PNG through the same path is loaded.)
    load_image(client, put_image(data=encode(Image.new("RGB", (32, 24)), "PNG")), settings)
    assert loads and set(loads) == {(32, 24)}


@pytest.mark.parametrize("warning_filter", ["error", "ignore"])
def test_pillow_bomb_warning_never_crashes(warning_filter: Literal["error", "ignore"]) -> None:
    # 100 Mpx: past Pillow's warning threshold (89 Mpx), under its error threshold
    data = huge_png(10_000, 10_000)
    with warnings.catch_warnings():
        warnings.simplefilter(warning_filter, Image.DecompressionBombWarning)
        with pytest.raises(JobError) as info:
            decode_image(data, max_pixels=50_000_000)
    assert info.value.code == "image_too_large"


# --- decoding ----------------------------------------------------------------------------


def test_exif_orientation_is_applied_and_reported(client: Any, put_image: Callable[..., str]) -> None:
    # Given a 64x48 JPEG stored sideways: left half red, right half blue, orientation 6
    img = Image.new("RGB", (64, 48), (255, 0, 0))
    img.paste((0, 0, 255), (32, 0, 64, 48))
    exif = Image.Exif()
    exif[0x0112] = 6
    uri = put_image(data=encode(img, exif=exif, quality=95))
    # When loaded, Then it is upright: 48 wide, 64 high, the red half on top
    _, decoded = load_image(client, uri, settings_for("http://unused"))
    assert (decoded.width, decoded.height) == (48, 64)
    assert decoded.image.size == (48, 64)
    top, bottom = pixel(decoded.image, (24, 8)), pixel(decoded.image, (24, 56))
    assert top[0] > 200 and top[2] < 60 and bottom[2] > 200 and bottom[0] < 60


def test_exif_orientation_with_draft_reports_original_size() -> None:
    exif = Image.Exif()
    exif[0x0112] = 6
    decoded = decode_image(encode(Image.new("RGB", (1600, 1200), "gray"), exif=exif), max_pixels=10**8, target_size=384)
    assert (decoded.width, decoded.height) == (1200, 1600)
    assert decoded.image.size == (600, 800)


def _transparent(mode: str) -> Image.Image:
    img = Image.new("RGBA", (16, 16), (255, 0, 0, 0))
    img.paste((0, 0, 255, 255), (0, 0, 8, 16))
    return img if mode == "RGBA" else img.convert(mode)


def _palette(*, transparent: bool) -> Image.Image:
    img = Image.new("P", (16, 16), 0)
    img.putpalette([0, 0, 255, 255, 0, 0, 10, 200, 30])
    img.paste(2 if not transparent else 1, (8, 0, 16, 16))
    if transparent:
        img.info["transparency"] = 1
    return img


def _i16(value: int) -> Image.Image:
    return Image.new("I;16", (16, 16), value)


MODES = [
    pytest.param(_transparent("RGBA"), "PNG", (0, 0, 255), (255, 255, 255), id="RGBA-on-white"),
    pytest.param(_transparent("LA"), "PNG", (29, 29, 29), (255, 255, 255), id="LA-on-white"),
    pytest.param(_palette(transparent=True), "PNG", (0, 0, 255), (255, 255, 255), id="P-transparency"),
    pytest.param(_palette(transparent=True), "GIF", (0, 0, 255), (255, 255, 255), id="GIF-transparency"),
    pytest.param(_palette(transparent=False), "PNG", (0, 0, 255), (10, 200, 30), id="P"),
    pytest.param(_palette(transparent=False), "BMP", (0, 0, 255), (10, 200, 30), id="P-bmp"),
    pytest.param(Image.new("L", (16, 16), 77), "PNG", (77, 77, 77), (77, 77, 77), id="L"),
    pytest.param(Image.new("1", (16, 16), 1), "PNG", (255, 255, 255), (255, 255, 255), id="1-bit"),
    pytest.param(_i16(65535), "PNG", (255, 255, 255), (255, 255, 255), id="I16-white"),
    pytest.param(_i16(32768), "PNG", (128, 128, 128), (128, 128, 128), id="I16-mid"),
    pytest.param(_i16(200), "PNG", (0, 0, 0), (0, 0, 0), id="I16-dark-stays-dark"),
    pytest.param(Image.new("CMYK", (16, 16), (0, 0, 0, 0)), "JPEG", (255, 255, 255), (255, 255, 255), id="CMYK-jpeg"),
    pytest.param(Image.new("CMYK", (16, 16), (0, 255, 255, 0)), "TIFF", (255, 0, 0), (255, 0, 0), id="CMYK-tiff"),
]


@pytest.mark.parametrize(("img", "fmt", "left", "right"), MODES)
def test_modes_become_rgb(img: Image.Image, fmt: str, left: tuple[int, ...], right: tuple[int, ...]) -> None:
    decoded = decode_image(encode(img, fmt), max_pixels=10**6)
    assert decoded.image.mode == "RGB"
    assert (decoded.width, decoded.height) == (16, 16)
    for xy, want in (((2, 8), left), ((13, 8), right)):
        got = pixel(decoded.image, xy)
        assert max(abs(a - b) for a, b in zip(got, want)) <= 3, (xy, got, want)


@pytest.mark.parametrize("fmt", ["GIF", "WEBP", "PNG"])
def test_animated_images_give_their_first_frame(fmt: str) -> None:
    frames = [Image.new("RGB", (16, 16), color) for color in ((255, 0, 0), (0, 0, 255))]
    data = encode(frames[0], fmt, save_all=True, append_images=frames[1:], duration=100, loop=0, **({"lossless": True} if fmt == "WEBP" else {}))
    decoded = decode_image(data, max_pixels=10**6)
    assert pixel(decoded.image, (8, 8)) == (255, 0, 0)


# --- draft decoding against full decoding ------------------------------------------------------

CLIP_MEAN = np.array((0.48145466, 0.4578275, 0.40821073))
CLIP_STD = np.array((0.26862954, 0.26130258, 0.27577711))


def blip_pixels(img: Image.Image) -> np.ndarray:
    """Return what BlipImageProcessorPil gives: bicubic 384x384, /255, CLIP mean/std."""
    return (np.asarray(img.resize((384, 384), Image.Resampling.BICUBIC), dtype=np.float64) / 255.0 - CLIP_MEAN) / CLIP_STD


def test_draft_decode_is_close_to_full_decode() -> None:
    # Given a 1920x1080 JPEG of real photographs (skimage's samples, tiled at native size)
    sample = pytest.importorskip("skimage.data")
    canvas = Image.new("RGB", (1920, 1080))
    tiles = [sample.astronaut(), sample.coffee(), sample.chelsea(), sample.rocket()]
    for i, (x, y) in enumerate((x, y) for y in range(0, 1080, 400) for x in range(0, 1920, 512)):
        canvas.paste(Image.fromarray(tiles[i % len(tiles)]), (x, y))
    data = encode(canvas, quality=90)
    # When decoded in full and in draft mode for a 384 px model input
    full = decode_image(data, max_pixels=10**8)
    draft = decode_image(data, max_pixels=10**8, target_size=384)
    # Then draft decoded a quarter of the pixels, still at least 384 on each side
    assert full.image.size == (1920, 1080) and draft.image.size == (960, 540)
    assert (draft.width, draft.height) == (1920, 1080)
    # And the model's input barely moves: measured mean |diff| 0.008 (about 0.5 of an 8-bit
    # level) on photos and 0.054 on pure noise, the worst case; 0.02 leaves 2.5x headroom.
    diff = np.abs(blip_pixels(full.image) - blip_pixels(draft.image))
    assert diff.mean() < 0.02
    assert np.percentile(diff, 99) < 0.15
