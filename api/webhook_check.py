"""Submission-time checks of webhook URLs: the scheme and the SSRF guard (core/ssrf.py)."""

from __future__ import annotations

import logging
from functools import lru_cache

from core.ssrf import CachingResolver, ResolutionFailed, parse_networks, pin

log = logging.getLogger(__name__)

# Submission must answer quickly: a short DNS timeout, and answers shared for a few seconds
# (a batch of jobs usually names one webhook host).
DNS_TIMEOUT_SECONDS = 2.0
_resolver = CachingResolver(ttl=30.0)
_networks = lru_cache(maxsize=8)(parse_networks)  # the allowlist is parsed once, not once per job


def check_webhook_url(url: str, *, allowlist: tuple[str, ...] = ()) -> None:
    """Raise ``InvalidField`` when ``url`` is not an absolute http(s) URL the guard allows.

    A literal address, or a name that resolves to a refused address, is refused now (422
    ``webhook_url_forbidden``). A name that does not resolve (in time) is accepted: DNS may be
    down for a moment, and the delivery checks again and fails with ``dns_failed`` if it must.
    """
    try:
        pin(url, allowlist=_networks(allowlist), timeout=DNS_TIMEOUT_SECONDS, resolver=_resolver)
    except ResolutionFailed as exc:
        log.info("webhook_url accepted without a DNS answer: %s", exc)
