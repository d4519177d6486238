"""The SSRF guard: which addresses a webhook may reach, and how names are judged."""

from __future__ import annotations

import ipaddress
import socket
import time

import pytest

from core.ssrf import (
    CachingResolver,
    ResolutionFailed,
    WebhookUrlForbidden,
    WebhookUrlInvalid,
    parse_networks,
    parse_target,
    pin,
    resolve_with_timeout,
    system_resolver,
)

BLOCKED = [
    "127.0.0.1",  # loopback
    "127.255.255.254",
    "10.1.2.3",  # RFC 1918
    "172.16.0.1",
    "172.31.255.255",
    "192.168.1.1",
    "169.254.169.254",  # link-local: cloud metadata
    "169.254.0.1",
    "100.64.0.1",  # shared address space (CGNAT)
    "100.127.255.254",
    "0.0.0.0",  # unspecified
    "0.1.2.3",  # "this network"
    "224.0.0.1",  # multicast
    "239.255.255.250",
    "240.0.0.1",  # reserved
    "255.255.255.255",  # broadcast
    "192.0.0.8",  # IETF protocol assignments
    "192.0.2.10",  # documentation
    "198.18.0.1",  # benchmarking
    "::1",  # IPv6 loopback
    "::",  # IPv6 unspecified
    "fc00::1",  # unique local
    "fd12:3456::1",
    "fe80::1",  # link-local
    "ff02::1",  # multicast
    "2001:db8::1",  # documentation
    "::ffff:127.0.0.1",  # IPv4-mapped loopback
    "::ffff:169.254.169.254",  # IPv4-mapped metadata
    "::ffff:10.0.0.1",
    "64:ff9b::a9fe:a9fe",  # NAT64 of 169.254.169.254
    "2002:a9fe:a9fe::1",  # 6to4 of 169.254.169.254
    "2002:7f00:1::1",  # 6to4 of 127.0.0.1
]

PUBLIC = ["8.8.8.8", "1.1.1.1", "93.184.215.14", "2606:4700:4700::1111", "2a00:1450:4001:80b::200e"]


def _url(address: str) -> str:
    host = f"[{address}]" if ":" in address else address
    return f"https://{host}/hook"


@pytest.mark.parametrize("address", BLOCKED)
def test_blocked_literal_addresses_are_refused(address: str) -> None:
    with pytest.raises(WebhookUrlForbidden) as info:
        pin(_url(address), allowlist=(), timeout=1)
    assert info.value.code == "webhook_url_forbidden" and info.value.status == 422


@pytest.mark.parametrize("address", PUBLIC)
def test_public_literal_addresses_are_allowed_and_pinned(address: str) -> None:
    pinned = pin(_url(address), allowlist=(), timeout=1)
    assert pinned.address == address
    assert pinned.target.port == 443 and pinned.target.path == "/hook"


@pytest.mark.parametrize("address", BLOCKED)
def test_a_name_resolving_to_a_blocked_address_is_refused(address: str) -> None:
    # Given a host name whose DNS answer is a blocked address
    def resolver(host: str, port: int) -> list[str]:
        assert (host, port) == ("hooks.example.com", 443)
        return [address]

    # Then the URL is refused, naming the host and the address
    with pytest.raises(WebhookUrlForbidden, match="hooks.example.com"):
        pin("https://hooks.example.com/x", allowlist=(), timeout=1, resolver=resolver)


def test_every_address_is_checked_not_just_the_first() -> None:
    def resolver(host: str, port: int) -> list[str]:
        return ["93.184.215.14", "10.0.0.5"]

    with pytest.raises(WebhookUrlForbidden, match="10.0.0.5"):
        pin("http://mixed.example.com/", allowlist=(), timeout=1, resolver=resolver)


def test_a_public_name_is_pinned_to_its_checked_address() -> None:
    pinned = pin("http://hooks.example.com:8080/a?b=c", allowlist=(), timeout=1,
                 resolver=lambda host, port: ["93.184.215.14", "2606:4700::1"])
    assert pinned.address == "93.184.215.14"
    assert (pinned.target.host, pinned.target.port, pinned.target.path) == ("hooks.example.com", 8080, "/a?b=c")


def test_localhost_is_refused_through_the_system_resolver() -> None:
    with pytest.raises(WebhookUrlForbidden, match="localhost"):
        pin("http://localhost:9/hook", allowlist=(), timeout=2)


def test_the_system_resolver_is_consulted(monkeypatch: pytest.MonkeyPatch) -> None:
    # socket.getaddrinfo is the seam between us and DNS: a rebinding answer is caught there.
    def fake_getaddrinfo(host, port, *args, **kwargs):  # type: ignore[no-untyped-def]
        return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", ("169.254.169.254", port))]

    monkeypatch.setattr(socket, "getaddrinfo", fake_getaddrinfo)
    with pytest.raises(WebhookUrlForbidden, match="169.254.169.254"):
        pin("https://innocent.example.com/", allowlist=(), timeout=2)


@pytest.mark.parametrize(
    ("allowlist", "address", "allowed"),
    [
        (("127.0.0.0/8",), "127.0.0.1", True),
        (("127.0.0.0/8",), "::ffff:127.0.0.1", True),
        (("127.0.0.1/32",), "127.0.0.2", False),
        (("10.0.0.0/8",), "10.9.9.9", True),
        (("10.0.0.0/8",), "192.168.0.1", False),
        (("fd00::/8",), "fd00::5", True),
        (("127.0.0.0/8",), "::1", False),
    ],
)
def test_the_allowlist_admits_what_it_names(allowlist: tuple[str, ...], address: str, allowed: bool) -> None:
    url = _url(address)
    if allowed:
        pinned = pin(url, allowlist=parse_networks(allowlist), timeout=1).address
        assert ipaddress.ip_address(pinned) == ipaddress.ip_address(address)
    else:
        with pytest.raises(WebhookUrlForbidden):
            pin(url, allowlist=parse_networks(allowlist), timeout=1)


@pytest.mark.parametrize(
    "url",
    [
        "ftp://example.com/hook",
        "file:///etc/passwd",
        "gopher://127.0.0.1:6379/_INFO",
        "//example.com/hook",
        "example.com/hook",
        "http:///nohost",
        "http://user:pass@example.com/hook",
        "http://127.0.0.1@example.com/hook",
        "http://example.com:99999/hook",
        "http://example.com/a b",
        "http://example.com/a\r\nX-Injected: 1",
    ],
)
def test_malformed_urls_are_invalid(url: str) -> None:
    with pytest.raises(WebhookUrlInvalid) as info:
        parse_target(url)
    assert info.value.code == "invalid_webhook_url"


def test_resolution_failures_and_timeouts_are_resolution_failed() -> None:
    with pytest.raises(ResolutionFailed):
        resolve_with_timeout("no-such-host.invalid", 80, timeout=5)

    def slow(host: str, port: int) -> list[str]:
        time.sleep(1.0)
        return ["93.184.215.14"]

    began = time.monotonic()
    with pytest.raises(ResolutionFailed, match="took over"):
        resolve_with_timeout("slow.example.com", 80, timeout=0.1, resolver=slow)
    assert time.monotonic() - began < 0.9


def test_the_caching_resolver_resolves_each_host_once() -> None:
    calls: list[str] = []

    def counting(host: str, port: int) -> list[str]:
        calls.append(host)
        if host == "bad.example.com":
            raise ResolutionFailed("nope")
        return ["93.184.215.14"]

    cached = CachingResolver(counting, ttl=60)
    for _ in range(3):
        assert cached("good.example.com", 443) == ["93.184.215.14"]
        with pytest.raises(ResolutionFailed):
            cached("bad.example.com", 443)
    assert calls == ["good.example.com", "bad.example.com"]


def test_system_resolver_returns_distinct_addresses(monkeypatch: pytest.MonkeyPatch) -> None:
    assert "127.0.0.1" in system_resolver("localhost", 80)

    # Given a resolver answer that names the same address twice (as getaddrinfo does per protocol)
    def fake_getaddrinfo(host, port, *args, **kwargs):  # type: ignore[no-untyped-def]
        return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", ("93.184.215.14", port)),
                (socket.AF_INET, socket.SOCK_STREAM, 6, "", ("93.184.215.14", port))]

    monkeypatch.setattr(socket, "getaddrinfo", fake_getaddrinfo)
    # Then it is returned once
    assert system_resolver("twice.example.com", 443) == ["93.184.215.14"]
