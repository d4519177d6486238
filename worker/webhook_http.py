"""One HTTP POST to a checked address: pinned connections, no redirects, no proxies, capped reads.

The connection goes to the address the SSRF guard checked, while the Host header, TLS SNI
and certificate verification use the URL's host name. Pools are kept per (scheme, host,
port, address), so keep-alive connections are reused and never outlive the address check.
"""

from __future__ import annotations

import ssl
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

import urllib3
from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.exceptions import (
    ConnectTimeoutError,
    HTTPError,
    NewConnectionError,
    ProtocolError,
    ReadTimeoutError,
    SSLError,
)

from core.ssrf import PinnedTarget

try:
    import certifi

    _CA_BUNDLE: str | None = certifi.where()
except ImportError:  # pragma: no cover - requests brings certifi
    _CA_BUNDLE = None


class _Pinned:
    """Connect to ``pinned_address`` instead of resolving the host again."""

    pinned_address: str
    _dns_host: str

    def __init__(self, *args: Any, pinned_address: str, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.pinned_address = pinned_address

    def _new_conn(self) -> Any:
        # urllib3 dials ``_dns_host``; everything else (Host, SNI, cert names) uses ``host``.
        host, self._dns_host = self._dns_host, self.pinned_address
        try:
            return super()._new_conn()  # type: ignore[misc]
        finally:
            self._dns_host = host


class PinnedHTTPConnection(_Pinned, HTTPConnection):
    pass


class PinnedHTTPSConnection(_Pinned, HTTPSConnection):
    pass


class _PinnedHTTPPool(urllib3.HTTPConnectionPool):
    ConnectionCls = PinnedHTTPConnection


class _PinnedHTTPSPool(urllib3.HTTPSConnectionPool):
    ConnectionCls = PinnedHTTPSConnection


@dataclass(frozen=True)
class Response:
    status: int
    headers: dict[str, str]


class SendError(Exception):
    """Raised when no HTTP response came back; ``code`` says why (retried)."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


class PinnedSender:
    """POST bodies to pinned targets, reusing connections per checked address."""

    def __init__(self, *, connect_timeout: float, read_timeout: float, max_response_bytes: int,
                 pool_size: int = 16, max_pools: int = 256, ca_certs: str | None = None) -> None:
        self.timeout = urllib3.Timeout(connect=connect_timeout, read=read_timeout)
        self.read_budget = connect_timeout + read_timeout
        self.max_response_bytes = max_response_bytes
        self.pool_size = pool_size
        self.max_pools = max_pools
        self.ca_certs = ca_certs or _CA_BUNDLE
        self._pools: OrderedDict[tuple[str, str, int, str], urllib3.HTTPConnectionPool] = OrderedDict()
        self._lock = threading.Lock()

    def _pool(self, pinned: PinnedTarget) -> urllib3.HTTPConnectionPool:
        t = pinned.target
        key = (t.scheme, t.host, t.port, pinned.address)
        with self._lock:
            pool = self._pools.get(key)
            if pool is not None:
                self._pools.move_to_end(key)
                return pool
            kw: dict[str, Any] = dict(maxsize=self.pool_size, block=False, retries=False,
                                      timeout=self.timeout, pinned_address=pinned.address)
            if t.scheme == "https":
                pool = _PinnedHTTPSPool(t.host, t.port, cert_reqs=ssl.CERT_REQUIRED, ca_certs=self.ca_certs, **kw)
            else:
                pool = _PinnedHTTPPool(t.host, t.port, **kw)
            self._pools[key] = pool
            while len(self._pools) > self.max_pools:
                _, old = self._pools.popitem(last=False)
                old.close()
        return pool

    def post(self, pinned: PinnedTarget, body: bytes, headers: dict[str, str]) -> Response:
        """POST ``body``; return the status and headers (redirects are returned, not followed)."""
        pool = self._pool(pinned)
        try:
            resp = pool.urlopen("POST", pinned.target.path, body=body, headers=headers, redirect=False,
                                retries=False, timeout=self.timeout, preload_content=False,
                                assert_same_host=False, release_conn=False)
        except NewConnectionError as exc:  # before its base class, ConnectTimeoutError
            raise SendError("connection_error", f"cannot connect: {_reason(exc)}") from exc
        except ConnectTimeoutError as exc:
            raise SendError("connect_timeout", f"connecting took over {self.timeout.connect_timeout}s") from exc
        except ReadTimeoutError as exc:
            raise SendError("read_timeout", f"no response within {self.timeout.read_timeout}s") from exc
        except SSLError as exc:
            raise SendError("tls_error", f"TLS failed: {exc}") from exc
        except (ProtocolError, HTTPError, OSError) as exc:
            raise SendError("connection_error", f"the connection failed: {_reason(exc)}") from exc
        try:
            self._drain(resp)
        finally:
            resp.release_conn()
        return Response(status=resp.status, headers={k.lower(): v for k, v in resp.headers.items()})

    def _drain(self, resp: Any) -> None:
        # Read (and drop) a capped body so the connection can be reused; a consumer that
        # sends more, or drips it, loses the connection instead of holding the worker.
        deadline = time.monotonic() + self.read_budget
        left = self.max_response_bytes
        try:
            while left > 0 and time.monotonic() < deadline:
                chunk = resp.read(min(left, 16384))
                if not chunk:
                    return
                left -= len(chunk)
        except (HTTPError, OSError):
            pass
        resp.close()  # not fully read: drop the connection rather than reuse it

    def close(self) -> None:
        """Close every pooled connection."""
        with self._lock:
            pools, self._pools = list(self._pools.values()), OrderedDict()
        for pool in pools:
            pool.close()


def _reason(exc: BaseException) -> str:
    text = str(getattr(exc, "reason", None) or exc)
    return text[:300]
