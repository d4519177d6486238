"""Submission-time checks of webhook URLs (scheme and, with issue 4, the SSRF guard)."""

from __future__ import annotations

from urllib.parse import urlsplit

from core.errors import InvalidField


def check_webhook_url(url: str, *, allowlist: tuple[str, ...] = ()) -> None:
    """Raise ``InvalidField`` when ``url`` is not an absolute http(s) URL."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise InvalidField("webhook_url must be an absolute http(s) URL", code="invalid_webhook_url")
