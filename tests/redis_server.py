"""A private redis-server with an append-only file, for tests that restart or stop Redis."""

from __future__ import annotations

import shutil
import signal
import subprocess
import tempfile
from pathlib import Path

import redis as redis_lib

from tests.helpers import free_port, wait_for


class RedisServer:
    """A redis-server on a free port whose data (AOF) survives ``restart``."""

    def __init__(self, *, appendonly: bool = True) -> None:
        self.port = free_port()
        self.dir = Path(tempfile.mkdtemp(prefix="verifier-redis-"))
        self.appendonly = appendonly
        self.proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        """Start the server and wait until it answers."""
        binary = shutil.which("redis-server") or "redis-server"
        self.proc = subprocess.Popen(
            [binary, "--port", str(self.port), "--bind", "127.0.0.1", "--dir", str(self.dir), "--save", "",
             "--appendonly", "yes" if self.appendonly else "no", "--appendfsync", "everysec"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        wait_for(lambda: redis_lib.Redis.from_url(self.url).ping(), timeout=15, what="redis-server")

    def stop(self, *, hard: bool = False) -> None:
        """Stop the server: SIGTERM (clean) or SIGKILL (hard, after the AOF's fsync second)."""
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL if hard else signal.SIGTERM)
            self.proc.wait(15)

    def restart(self, *, hard: bool = False, down_for: float = 0.0) -> None:
        """Stop and start again on the same port and data directory."""
        import time

        self.stop(hard=hard)
        time.sleep(down_for)
        self.start()

    def close(self) -> None:
        self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)
