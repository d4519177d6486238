"""Authentication: every ``/v1`` request carries ``Authorization: Bearer <API key>``.

A ``before_request`` hook turns the key into ``flask.g.principal`` (tenant, grants,
scopes). ``/healthz``, ``/readyz``, ``/openapi.json``, ``/dashboard`` and its static files
stay open; so does ``/metrics`` unless ``VERIFIER_METRICS_PUBLIC`` is false, when it needs a
key with the ``operator`` scope. With ``VERIFIER_AUTH_ENABLED=false`` every caller is the
``default`` tenant with every grant and scope (development only).
"""

from __future__ import annotations

from typing import Any

from flask import Flask, current_app, g, request

from api.context import Principal, get_principal, get_settings
from core.errors import Forbidden, Unauthorized
from core.keys import ALL_BUCKETS, SCOPES, KeyStore

OPEN_PRINCIPAL = Principal(tenant="default", buckets=(ALL_BUCKETS,), scopes=tuple(sorted(SCOPES)))


def init_app(app: Flask) -> None:
    """Register the key store and the authentication hook."""
    state = app.extensions["verifier"]
    state["keys"] = KeyStore(state["redis"])
    app.before_request(authenticate)


def get_keys() -> KeyStore:
    return current_app.extensions["verifier"]["keys"]


def needs_key(path: str) -> bool:
    """Return whether ``path`` is behind authentication."""
    if path == "/v1" or path.startswith("/v1/"):
        return True
    return path == "/metrics" and not get_settings().metrics_public


def authenticate() -> Any:
    """Set ``g.principal`` from the bearer key, or answer 401."""
    if not needs_key(request.path):
        return None
    if not get_settings().auth_enabled:
        g.principal = OPEN_PRINCIPAL
        return None
    try:
        key = get_keys().authenticate(_bearer_token())
    except Unauthorized as exc:
        return unauthorized_response(exc)
    g.principal = Principal(tenant=key.tenant, key_id=key.id, buckets=key.buckets, scopes=key.scopes)
    return None


def _bearer_token() -> str:
    header = request.headers.get("Authorization")
    if not header:
        raise Unauthorized("send the API key as 'Authorization: Bearer <key>'", code="missing_api_key")
    scheme, _, token = header.strip().partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise Unauthorized("the Authorization header must read 'Bearer <key>'", code="invalid_api_key")
    return token.strip()


def unauthorized_response(error: Unauthorized) -> Any:
    """Render a 401 with the error body and the ``WWW-Authenticate`` challenge."""
    from api.app import error_response

    response = error_response(error)
    response.headers["WWW-Authenticate"] = 'Bearer realm="caption-verifier", error="invalid_token"' \
        if error.code != "missing_api_key" else 'Bearer realm="caption-verifier"'
    return response


def require_scope(scope: str) -> Principal:
    """Return the caller when its key has ``scope``; raise ``Forbidden`` (403) otherwise."""
    principal = get_principal()
    if scope not in principal.scopes:
        raise Forbidden(f"this API key lacks the {scope!r} scope", code="missing_scope")
    return principal
