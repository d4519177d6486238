"""Accessors for the per-app collaborators and the caller's identity."""

from __future__ import annotations

from dataclasses import dataclass

import redis
from flask import current_app, g

from api.intake import Intake
from core.settings import Settings
from core.store import JobStore


@dataclass(frozen=True)
class Principal:
    """Who is calling: a tenant, the key it used, and what that key may do."""

    tenant: str
    key_id: str | None = None
    buckets: tuple[str, ...] = ()
    scopes: tuple[str, ...] = ()


ANONYMOUS = Principal(tenant="default")


def get_settings() -> Settings:
    return current_app.extensions["verifier"]["settings"]


def get_store() -> JobStore:
    return current_app.extensions["verifier"]["store"]


def get_intake() -> Intake:
    return current_app.extensions["verifier"]["intake"]


def get_redis() -> redis.Redis:
    return current_app.extensions["verifier"]["redis"]


def get_broker() -> redis.Redis:
    """Return a client of the broker's Redis (the job store's unless the broker is set apart)."""
    return current_app.extensions["verifier"]["broker"]


def get_principal() -> Principal:
    """Return the authenticated caller (the default tenant when auth is off)."""
    return getattr(g, "principal", ANONYMOUS)
