"""Serve the API under gunicorn (a production WSGI server), configured from Python."""

from __future__ import annotations

from typing import Any

from gunicorn.app.base import BaseApplication

from api.app import create_app
from core.settings import Settings


class GunicornServer(BaseApplication):
    """A gunicorn application that serves ``create_app(settings)``."""

    def __init__(self, settings: Settings, options: dict[str, Any]) -> None:
        self.settings = settings
        self.options = options
        super().__init__()

    def load_config(self) -> None:
        for key, value in self.options.items():
            if key in self.cfg.settings and value is not None:
                self.cfg.set(key, value)

    def load(self) -> Any:
        return create_app(self.settings)


def serve(settings: Settings, *, host: str, port: int, workers: int, threads: int) -> None:
    """Run gunicorn in the foreground until it is stopped."""
    GunicornServer(settings, {
        "bind": f"{host}:{port}",
        "workers": workers,
        "threads": threads,
        "worker_class": "gthread" if threads > 1 else "sync",
        "graceful_timeout": 30,
        "timeout": 60,
        "keepalive": 5,
        "accesslog": "-",
        "errorlog": "-",
        "loglevel": settings.log_level,
        "proc_name": "verifier-api",
    }).run()
