"""Start the pieces a local run needs when they are not already running (demo, benchmarks)."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from typing import Any
from contextlib import ExitStack
from pathlib import Path

import redis
import requests

from core.settings import ENV_NAMES, Settings


def s3_bucket(endpoint: str | None, region: str, bucket: str) -> Any:
    """Return a boto3 S3 client for ``endpoint`` after making sure ``bucket`` exists."""
    import boto3

    s3 = boto3.client("s3", endpoint_url=endpoint, region_name=region)
    try:
        s3.create_bucket(Bucket=bucket)
    except s3.exceptions.BucketAlreadyOwnedByYou:
        pass
    return s3


def free_port() -> int:
    """Return a free TCP port on 127.0.0.1."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_until(check: Callable[[], bool], *, timeout: float, what: str, proc: subprocess.Popen | None = None) -> None:
    """Poll ``check`` until true; raise with ``what`` after ``timeout`` seconds or if ``proc`` died."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"{what}: the process exited with status {proc.returncode}")
        try:
            if check():
                return
        except Exception:  # noqa: BLE001 - not up yet
            pass
        time.sleep(0.1)
    raise RuntimeError(f"timed out after {timeout:.0f}s waiting for {what}")


def settings_env(settings: Settings, base: dict[str, str] | None = None) -> dict[str, str]:
    """Return an environment that carries ``settings`` to a ``verifier`` subprocess."""
    import dataclasses

    env = {k: v for k, v in (base or os.environ).items() if not k.startswith("VERIFIER_")}
    for f in dataclasses.fields(settings):
        value = getattr(settings, f.name)
        if value is None:
            continue
        if isinstance(value, tuple):
            value = ",".join(str(v) for v in value)
        env[ENV_NAMES[f.name]] = str(value).lower() if isinstance(value, bool) else str(value)
    env["PYTHONUNBUFFERED"] = "1"
    return env


class LocalStack:
    """Processes started for a local run, stopped (in reverse order) on ``close``."""

    def __init__(self, log_dir: Path | None = None, *, say: Callable[[str], None] = print) -> None:
        self.log_dir = log_dir or Path(tempfile.mkdtemp(prefix="verifier-"))
        self.say = say
        self._stack = ExitStack()
        self.procs: dict[str, subprocess.Popen] = {}

    def spawn(self, name: str, args: list[str], env: dict[str, str] | None = None) -> subprocess.Popen:
        """Start ``args`` with output to ``<log_dir>/<name>.log``; stop it on close."""
        log = (self.log_dir / f"{name}.log").open("wb")
        proc = subprocess.Popen(args, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        self.procs[name] = proc
        self._stack.callback(self._stop, name, proc, log)
        return proc

    def _stop(self, name: str, proc: subprocess.Popen, log: object) -> None:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(20)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(5)
        log.close()  # type: ignore[attr-defined]

    def ensure_redis(self, url: str) -> str:
        """Return a Redis URL that answers: ``url`` if it does, else a new local redis-server's."""
        try:
            redis.Redis.from_url(url, socket_connect_timeout=1).ping()
            self.say(f"redis: using {url}")
            return url
        except redis.RedisError:
            pass
        binary = shutil.which("redis-server")
        if binary is None:
            raise RuntimeError(f"no Redis answers at {url} and redis-server is not installed")
        port = free_port()
        proc = self.spawn("redis", [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "",
                                    "--appendonly", "no"])
        new_url = f"redis://127.0.0.1:{port}/0"
        wait_until(lambda: bool(redis.Redis.from_url(new_url).ping()), timeout=15, what="redis-server", proc=proc)
        self.say(f"redis: started redis-server on 127.0.0.1:{port}")
        return new_url

    def start_s3(self) -> str:
        """Start moto's S3-protocol server on 127.0.0.1 and return its endpoint."""
        # The local server accepts any credentials; set some so boto3 signs requests.
        for var, value in (("AWS_ACCESS_KEY_ID", "local"), ("AWS_SECRET_ACCESS_KEY", "local")):
            os.environ.setdefault(var, value)
        port = free_port()
        proc = self.spawn("s3", [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)])
        endpoint = f"http://127.0.0.1:{port}"
        wait_until(lambda: requests.get(endpoint, timeout=1).status_code < 500, timeout=30, what="S3 server",
                   proc=proc)
        self.say(f"s3: started moto S3 server on {endpoint}")
        return endpoint

    def start_api(self, settings: Settings) -> str:
        """Start ``verifier api`` (gunicorn) on a free port and return its base URL."""
        port = free_port()
        proc = self.spawn("api", [sys.executable, "-m", "verifier", "api", "--host", "127.0.0.1", "--port",
                                  str(port), "--workers", "2"], settings_env(settings))
        base = f"http://127.0.0.1:{port}"
        wait_until(lambda: requests.get(f"{base}/healthz", timeout=1).ok, timeout=30, what="the API", proc=proc)
        self.say(f"api: gunicorn serving {base}")
        return base

    def start_worker(self, settings: Settings, *, queues: str = "verify", name: str = "worker",
                     timeout: float = 600) -> subprocess.Popen:
        """Start ``verifier worker`` and wait until its heartbeat says the model is warm."""
        from core.workers import list_workers

        began = time.monotonic()
        proc = self.spawn(name, [sys.executable, "-m", "verifier", "worker", "--queues", queues],
                          settings_env(settings))
        client = redis.Redis.from_url(settings.redis_url)
        wait_until(lambda: any(w.get("pid") == proc.pid and w["alive"] for w in list_workers(client)),
                   timeout=timeout, what=f"the {queues} worker (log: {self.log_dir / (name + '.log')})", proc=proc)
        self.say(f"worker: {queues} worker ready in {time.monotonic() - began:.1f}s")
        return proc

    def close(self) -> None:
        """Stop everything started, newest first."""
        self._stack.close()

    def __enter__(self) -> LocalStack:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
