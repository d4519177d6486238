"""The WSGI entry point gunicorn serves: ``api.wsgi:create_app_from_env()``."""

from __future__ import annotations

from flask import Flask

from api.app import create_app
from core.settings import Settings


def create_app_from_env() -> Flask:
    """Create the app from ``VERIFIER_*`` variables."""
    return create_app(Settings.from_env())
