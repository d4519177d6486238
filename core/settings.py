"""One frozen, typed settings object, built once from ``VERIFIER_*`` variables."""

from __future__ import annotations

import dataclasses
import ipaddress
import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

PREFIX = "VERIFIER_"
_RATE_RE = re.compile(r"\d+\s*(/|per)\s*(\d+\s*)?(second|minute|hour|day)s?")
DEFAULT_MODEL = "Salesforce/blip-itm-base-coco"


class SettingsError(ValueError):
    """Raised when a ``VERIFIER_*`` variable is missing or malformed."""


def _int(raw: str) -> int:
    return int(raw.strip())


def _float(raw: str) -> float:
    value = float(raw.strip())
    if value != value or value in (float("inf"), float("-inf")):
        raise ValueError("not a finite number")
    return value


def _bool(raw: str) -> bool:
    lowered = raw.strip().lower()
    if lowered in ("1", "true", "yes", "on"):
        return True
    if lowered in ("0", "false", "no", "off", ""):
        return False
    raise ValueError("expected true/false")


def str_tuple(raw: str) -> tuple[str, ...]:
    """Return the non-empty, stripped items of a comma-separated list."""
    return tuple(part.strip() for part in raw.split(",") if part.strip())


def _float_tuple(raw: str) -> tuple[float, ...]:
    return tuple(_float(part) for part in str_tuple(raw))


def _networks(raw: str) -> tuple[str, ...]:
    parts = str_tuple(raw)
    for part in parts:
        ipaddress.ip_network(part, strict=False)
    return parts


def _optional_str(raw: str) -> str | None:
    return raw.strip() or None


def _choice(*choices: str) -> Callable[[str], str]:
    def parse(raw: str) -> str:
        value = raw.strip().lower()
        if value not in choices:
            raise ValueError(f"expected one of {', '.join(choices)}")
        return value

    return parse


@dataclass(frozen=True)
class Settings:
    """Everything the API and the workers can be configured with."""

    # Connections
    redis_url: str = "redis://127.0.0.1:6379/0"
    broker_url: str | None = None
    s3_endpoint_url: str | None = None
    s3_region: str = "us-east-1"
    # The model
    model: str = DEFAULT_MODEL
    model_revision: str | None = None
    device: str = "auto"
    dtype: str = "auto"
    quantize: str = "none"
    default_threshold: float = 0.5
    # Images
    max_image_bytes: int = 20 * 1024 * 1024
    max_image_pixels: int = 50_000_000
    s3_retries: int = 4
    # Jobs
    result_ttl_seconds: int = 7 * 24 * 3600
    job_max_starts: int = 3
    # Batching
    batch_max_pairs: int = 64
    batch_max_images: int = 16
    batch_max_wait_ms: int = 10
    io_threads: int = 8
    # Workers
    worker_heartbeat_seconds: float = 5.0
    worker_dead_after_seconds: float = 30.0
    visibility_timeout_seconds: int = 900
    # Webhooks
    webhook_secrets: tuple[str, ...] = ()
    webhook_allowlist: tuple[str, ...] = ()
    webhook_retry_delays: tuple[float, ...] = (5, 300, 1800, 7200, 18000, 36000)
    webhook_connect_timeout: float = 3.0
    webhook_read_timeout: float = 10.0
    webhook_dns_timeout: float = 5.0
    webhook_retry_after_max: float = 3600.0
    webhook_max_response_bytes: int = 64 * 1024
    webhook_poll_seconds: float = 1.0
    # API
    max_request_bytes: int = 1024 * 1024
    auth_enabled: bool = True
    metrics_public: bool = True
    rate_limit: str = "50/second"
    tenant_max_queued: int = 10_000
    log_level: str = "info"

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, **overrides: Any) -> Settings:
        """Build settings from ``VERIFIER_*`` variables; a bad value names its variable."""
        environ = os.environ if environ is None else environ
        values: dict[str, Any] = {}
        for f in dataclasses.fields(cls):
            name = ENV_NAMES[f.name]
            if name not in environ:
                continue
            raw = environ[name]
            try:
                values[f.name] = PARSERS[f.name](raw)
            except (ValueError, TypeError) as exc:
                raise SettingsError(f"invalid value for {name}={raw!r}: {exc}") from None
        values.update(overrides)
        settings = cls(**values)
        settings.validate()
        return settings

    def validate(self) -> None:
        """Check cross-field constraints; raise ``SettingsError`` naming the variable."""
        checks = [
            ("default_threshold", 0.0 <= self.default_threshold <= 1.0, "must be in [0, 1]"),
            ("max_image_bytes", self.max_image_bytes > 0, "must be positive"),
            ("max_image_pixels", self.max_image_pixels > 0, "must be positive"),
            ("batch_max_pairs", self.batch_max_pairs >= 1, "must be at least 1"),
            ("batch_max_images", self.batch_max_images >= 1, "must be at least 1"),
            ("batch_max_wait_ms", self.batch_max_wait_ms >= 0, "must be >= 0"),
            ("io_threads", self.io_threads >= 1, "must be at least 1"),
            ("job_max_starts", self.job_max_starts >= 1, "must be at least 1"),
            ("result_ttl_seconds", self.result_ttl_seconds > 0, "must be positive"),
            ("webhook_retry_delays", all(d >= 0 for d in self.webhook_retry_delays), "must be >= 0"),
            ("webhook_connect_timeout", self.webhook_connect_timeout > 0, "must be positive"),
            ("webhook_read_timeout", self.webhook_read_timeout > 0, "must be positive"),
            ("webhook_dns_timeout", self.webhook_dns_timeout > 0, "must be positive"),
            ("webhook_retry_after_max", self.webhook_retry_after_max >= 0, "must be >= 0"),
            ("webhook_max_response_bytes", self.webhook_max_response_bytes >= 0, "must be >= 0"),
            ("webhook_poll_seconds", self.webhook_poll_seconds > 0, "must be positive"),
            ("visibility_timeout_seconds", self.visibility_timeout_seconds > 0, "must be positive"),
            ("rate_limit", bool(_RATE_RE.fullmatch(self.rate_limit)), "must read like '50/second' or '600/minute'"),
            ("tenant_max_queued", self.tenant_max_queued >= 1, "must be at least 1"),
            ("max_request_bytes", self.max_request_bytes > 0, "must be positive"),
        ]
        for name, ok, why in checks:
            if not ok:
                raise SettingsError(f"invalid value for {ENV_NAMES[name]}: {why}")
        for secret in self.webhook_secrets:
            if not secret.startswith("whsec_"):
                raise SettingsError(f"invalid value for {ENV_NAMES['webhook_secrets']}: secrets start with 'whsec_'")

    @property
    def celery_broker_url(self) -> str:
        """Return the Celery broker URL (the Redis URL unless set apart)."""
        return self.broker_url or self.redis_url


_PARSERS: dict[str, Callable[[str], Any]] = {
    "broker_url": _optional_str,
    "s3_endpoint_url": _optional_str,
    "model_revision": _optional_str,
    "device": _choice("auto", "cpu", "cuda"),
    "dtype": _choice("auto", "float32", "float16", "bfloat16"),
    "quantize": _choice("none", "int8"),
    "webhook_secrets": str_tuple,
    "webhook_allowlist": _networks,
    "webhook_retry_delays": _float_tuple,
    "log_level": _choice("debug", "info", "warning", "error"),
}
_ENV_ALIASES = {"webhook_secrets": "WEBHOOK_SECRET"}


def _default_parser(f: dataclasses.Field[Any]) -> Callable[[str], Any]:
    kind = f.type if isinstance(f.type, str) else getattr(f.type, "__name__", "str")
    return {"int": _int, "float": _float, "bool": _bool}.get(kind, str.strip)


PARSERS = {f.name: _PARSERS.get(f.name) or _default_parser(f) for f in dataclasses.fields(Settings)}
ENV_NAMES = {
    f.name: PREFIX + _ENV_ALIASES.get(f.name, f.name.upper()) for f in dataclasses.fields(Settings)
}
