"""Real ``verifier`` processes for integration tests: workers and the gunicorn API."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import redis as redis_lib
import requests

from core.settings import Settings
from core.workers import list_workers
from tests.helpers import free_port, verifier_env, wait_for

LOG_DIR = Path(os.environ.get("VERIFIER_TEST_LOGS", "artifacts/test-logs"))


class Proc:
    """A started ``verifier`` subprocess with its log file."""

    def __init__(self, args: list[str], env: dict[str, str], name: str) -> None:
        LOG_DIR.mkdir(parents=True, exist_ok=True)
        self.log_path = LOG_DIR / f"{name}-{int(time.time() * 1000)}.log"
        self._log = self.log_path.open("wb")
        self.popen = subprocess.Popen(
            [sys.executable, "-m", "verifier", *args], env=env, stdout=self._log, stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    @property
    def pid(self) -> int:
        return self.popen.pid

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def kill(self, sig: int = signal.SIGKILL) -> None:
        """Send ``sig`` to the process (the worker is one process: no pool children)."""
        if self.popen.poll() is None:
            os.kill(self.popen.pid, sig)

    def crash(self, timeout: float = 10.0) -> None:
        """Kill the process outright (SIGKILL), wait up to ``timeout`` for it to die, then clean up."""
        try:
            self.kill()
            self.popen.wait(timeout)
        finally:
            self.stop()

    @contextmanager
    def paused(self, timeout: float = 5.0) -> Iterator[None]:
        """Freeze the process (SIGSTOP) for the block, so it takes and runs nothing; resume it after."""
        os.kill(self.popen.pid, signal.SIGSTOP)
        try:
            wait_for(lambda: self._state() in ("T", "t"), timeout=timeout, interval=0.01, what=f"{self.pid} to stop")
            yield
        finally:
            if self.popen.poll() is None:
                os.kill(self.popen.pid, signal.SIGCONT)

    def _state(self) -> str:
        """Return the process state letter from /proc (R, S, T for stopped, ...)."""
        stat = Path(f"/proc/{self.popen.pid}/stat").read_text()
        return stat[stat.rindex(")") + 2]

    def stop(self, timeout: float = 20.0) -> int | None:
        """Stop gracefully (SIGTERM), then hard; return the exit code."""
        if self.popen.poll() is None:
            try:
                os.killpg(self.popen.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
            try:
                self.popen.wait(timeout)
            except subprocess.TimeoutExpired:
                os.killpg(self.popen.pid, signal.SIGKILL)
                self.popen.wait(5)
        self._log.close()
        return self.popen.returncode


def worker_settings(settings: Settings, **overrides: object) -> Settings:
    """Return settings tuned for tests: fast heartbeats and a short death timeout."""
    base = dict(settings.__dict__, worker_heartbeat_seconds=0.5, worker_dead_after_seconds=3.0)
    base.update(overrides)
    return Settings(**base)  # type: ignore[arg-type]


@contextmanager
def running_worker(settings: Settings, *, queues: str = "verify", concurrency: int = 8,
                   wait_ready: bool = True, name: str = "worker") -> Iterator[Proc]:
    """Run ``verifier worker`` until the block ends; wait until its model is warm."""
    proc = start_worker(settings, queues=queues, concurrency=concurrency, name=name)
    try:
        if wait_ready:
            wait_worker_ready(settings, proc)
        yield proc
    finally:
        proc.stop()


def start_worker(settings: Settings, *, queues: str = "verify", concurrency: int = 8, name: str = "worker") -> Proc:
    """Start ``verifier worker`` (not waiting for it)."""
    return Proc(["worker", "--queues", queues, "--concurrency", str(concurrency)], verifier_env(settings), name)


def wait_worker_ready(settings: Settings, proc: Proc, *, timeout: float = 90.0) -> None:
    """Wait until the worker process ``proc`` has a heartbeat."""
    client = redis_lib.Redis.from_url(settings.redis_url)

    def ready() -> bool:
        if proc.popen.poll() is not None:
            raise AssertionError(f"worker exited with {proc.popen.returncode}:\n{proc.log()[-3000:]}")
        return any(w.get("pid") == proc.pid and w["alive"] for w in list_workers(client))

    try:
        wait_for(ready, timeout=timeout, what="worker heartbeat")
    except AssertionError as exc:
        raise AssertionError(f"{exc}\n{proc.log()[-3000:]}") from None
    finally:
        client.close()


@contextmanager
def running_api(settings: Settings, *, workers: int = 1) -> Iterator[str]:
    """Run ``verifier api`` (gunicorn) on a free port; yield its base URL."""
    port = free_port()
    proc = Proc(["api", "--host", "127.0.0.1", "--port", str(port), "--workers", str(workers)],
                verifier_env(settings), "api")
    base = f"http://127.0.0.1:{port}"
    try:
        wait_for(lambda: requests.get(f"{base}/healthz", timeout=1).ok, timeout=30, what="api /healthz")
        yield base
    finally:
        proc.stop()


def wait_job(base: str, job_id: str, *, timeout: float = 60.0, headers: dict[str, str] | None = None) -> dict:
    """Poll a job until it reaches a final status; return its document."""

    def final() -> dict | None:
        doc = requests.get(f"{base}/v1/jobs/{job_id}", timeout=5, headers=headers).json()
        return doc if doc.get("status") in ("succeeded", "failed", "canceled") else None

    return wait_for(final, timeout=timeout, interval=0.1, what=f"job {job_id} to finish")
