"""The SSRF guard for webhook URLs: which URLs may be called, and at which checked address.

A webhook URL is chosen by a client, so a worker calling it must not be turned against the
private network it runs in. The host is resolved once, every address it resolves to is
checked, and the caller connects to one of those checked addresses (never resolving again,
so DNS rebinding cannot swap the address between the check and the connection).

Refused unless an allowlisted network names them: loopback, private (RFC 1918, fc00::/7),
link-local (169.254.0.0/16 with cloud metadata, fe80::/10), shared/CGNAT (100.64.0.0/10),
multicast, reserved, unspecified, documentation and benchmarking ranges, and IPv6 forms
that embed such an IPv4 address (IPv4-mapped, 6to4, NAT64). No I/O at import; no framework.
"""

from __future__ import annotations

import ipaddress
import socket
import threading
import time
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass
from urllib.parse import urlsplit

from core.errors import InvalidField

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
Resolver = Callable[[str, int], list[str]]

_NAT64 = ipaddress.ip_network("64:ff9b::/96")
# Refused whatever this Python's ``is_global`` tables say (they differ between versions).
_ALWAYS_BLOCKED = tuple(ipaddress.ip_network(n) for n in (
    "0.0.0.0/8", "10.0.0.0/8", "100.64.0.0/10", "127.0.0.0/8", "169.254.0.0/16", "172.16.0.0/12",
    "192.0.0.0/24", "192.0.2.0/24", "192.88.99.0/24", "192.168.0.0/16", "198.18.0.0/15",
    "198.51.100.0/24", "203.0.113.0/24", "224.0.0.0/4", "240.0.0.0/4",
    "::/128", "::1/128", "100::/64", "2001:db8::/32", "fc00::/7", "fe80::/10", "fec0::/10", "ff00::/8",
))


class WebhookUrlForbidden(InvalidField):
    """Raised when a webhook URL points at an address the SSRF guard refuses."""

    code = "webhook_url_forbidden"
    status = 422


class WebhookUrlInvalid(InvalidField):
    """Raised when a webhook URL is not an absolute http(s) URL a worker can call."""

    code = "invalid_webhook_url"
    status = 422


class ResolutionFailed(Exception):
    """Raised when a webhook host does not resolve (in time); worth retrying later."""

    code = "dns_failed"


@dataclass(frozen=True)
class Target:
    """A webhook URL split into what a connection needs."""

    url: str
    scheme: str
    host: str  # as in the URL, without brackets: the Host header and the TLS name
    port: int
    path: str  # path and query, as sent on the request line


@dataclass(frozen=True)
class PinnedTarget:
    """A target and the checked address to connect to."""

    target: Target
    address: str


def parse_target(url: str) -> Target:
    """Split ``url``; raise ``WebhookUrlInvalid`` unless it is an absolute http(s) URL."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        raise WebhookUrlInvalid("webhook_url is not a valid URL") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise WebhookUrlInvalid("webhook_url must be an absolute http(s) URL")
    if parts.username is not None or parts.password is not None:
        raise WebhookUrlInvalid("webhook_url must not carry credentials; use the signature to authenticate")
    if any(ch.isspace() or ord(ch) < 0x20 for ch in url):
        raise WebhookUrlInvalid("webhook_url must not contain whitespace or control characters")
    path = parts.path or "/"
    if parts.query:
        path = f"{path}?{parts.query}"
    default = 443 if parts.scheme == "https" else 80
    return Target(url=url, scheme=parts.scheme, host=parts.hostname, port=port or default, path=path)


def parse_networks(cidrs: Iterable[str]) -> tuple[IPNetwork, ...]:
    """Return the allowlist as networks (settings validated the strings already)."""
    return tuple(ipaddress.ip_network(c, strict=False) for c in cidrs)


def _embedded_ipv4(ip: IPAddress) -> ipaddress.IPv4Address | None:
    if not isinstance(ip, ipaddress.IPv6Address):
        return None
    if ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    if ip.sixtofour is not None:
        return ip.sixtofour
    if ip.teredo is not None:
        return ip.teredo[1]
    if ip in _NAT64:
        return ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
    return None


def is_public(ip: IPAddress) -> bool:
    """Return whether ``ip`` is a globally reachable unicast address (and so may be called)."""
    if not ip.is_global or ip.is_multicast or ip.is_reserved or ip.is_unspecified:
        return False
    if any(ip.version == net.version and ip in net for net in _ALWAYS_BLOCKED):
        return False
    inner = _embedded_ipv4(ip)
    return inner is None or is_public(inner)


def is_allowed(ip: IPAddress, allowlist: tuple[IPNetwork, ...]) -> bool:
    """Return whether a connection to ``ip`` is allowed: public, or named by the allowlist."""
    candidates: list[IPAddress] = [ip]
    inner = _embedded_ipv4(ip)
    if inner is not None and isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        candidates.append(inner)  # ::ffff:127.0.0.1 is 127.0.0.1 to the kernel
    if any(c.version == net.version and c in net for c in candidates for net in allowlist):
        return True
    return is_public(ip)


def literal_address(host: str) -> IPAddress | None:
    """Return the IP address ``host`` spells, or None for a name."""
    try:
        return ipaddress.ip_address(host.split("%", 1)[0] if "%" in host else host)
    except ValueError:
        return None


def system_resolver(host: str, port: int) -> list[str]:
    """Resolve ``host`` with the system resolver; return its distinct addresses."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError) as exc:
        raise ResolutionFailed(f"cannot resolve {host!r}: {exc}") from None
    seen: dict[str, None] = {}
    for _family, _type, _proto, _name, sockaddr in infos:
        seen.setdefault(str(sockaddr[0]), None)
    return list(seen)


_pool = ThreadPoolExecutor(max_workers=8, thread_name_prefix="dns")


def resolve_with_timeout(host: str, port: int, *, timeout: float, resolver: Resolver = system_resolver) -> list[str]:
    """Resolve ``host`` within ``timeout`` seconds (getaddrinfo has no timeout of its own)."""
    future = _pool.submit(resolver, host, port)
    try:
        return future.result(timeout=timeout)
    except FutureTimeout:
        raise ResolutionFailed(f"resolving {host!r} took over {timeout:g}s") from None


def check_addresses(host: str, addresses: list[str], allowlist: tuple[IPNetwork, ...]) -> str:
    """Return the first address to connect to; raise ``WebhookUrlForbidden`` if any is refused.

    Every address is checked, not just the one used: a name that resolves to a public and a
    private address is refused as a whole.
    """
    if not addresses:
        raise ResolutionFailed(f"{host!r} resolved to no address")
    for raw in addresses:
        ip = literal_address(raw)
        if ip is None or not is_allowed(ip, allowlist):
            shown = host if literal_address(host) is not None else f"{host!r} resolves to {raw}, which"
            raise WebhookUrlForbidden(
                f"webhook_url {shown} is a private, loopback, link-local or reserved address; "
                "the service does not call those"
            )
    return addresses[0]


def pin(url: str, *, allowlist: tuple[IPNetwork, ...], timeout: float,
        resolver: Resolver = system_resolver) -> PinnedTarget:
    """Parse, resolve once and check ``url``; return the target and the address to connect to.

    Raise ``WebhookUrlInvalid``, ``WebhookUrlForbidden`` or ``ResolutionFailed``.
    """
    target = parse_target(url)
    ip = literal_address(target.host)
    if ip is not None:
        return PinnedTarget(target, check_addresses(target.host, [str(ip)], allowlist))
    addresses = resolve_with_timeout(target.host, target.port, timeout=timeout, resolver=resolver)
    return PinnedTarget(target, check_addresses(target.host, addresses, allowlist))


class CachingResolver:
    """A resolver that remembers answers (and failures) for a few seconds.

    Submission-time checks use it so that a batch of 1000 jobs with the same webhook host
    resolves it once, and a host that times out costs its timeout once, not 1000 times.
    """

    def __init__(self, resolver: Resolver = system_resolver, *, ttl: float = 30.0, max_entries: int = 1024) -> None:
        self.resolver = resolver
        self.ttl = ttl
        self.max_entries = max_entries
        self._lock = threading.Lock()
        self._cache: dict[tuple[str, int], tuple[float, list[str] | ResolutionFailed]] = {}

    def __call__(self, host: str, port: int) -> list[str]:
        now = time.monotonic()
        with self._lock:
            hit = self._cache.get((host, port))
        if hit is not None and hit[0] > now:
            if isinstance(hit[1], ResolutionFailed):
                raise hit[1]
            return hit[1]
        answer: list[str] | ResolutionFailed
        try:
            answer = self.resolver(host, port)
        except ResolutionFailed as exc:
            answer = exc
        with self._lock:
            if len(self._cache) >= self.max_entries:
                self._cache.clear()
            self._cache[(host, port)] = (now + self.ttl, answer)
        if isinstance(answer, ResolutionFailed):
            raise answer
        return answer
