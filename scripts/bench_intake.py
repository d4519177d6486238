"""Intake throughput: ``POST /v1/jobs`` (auth on) beside a bare Flask LPUSH endpoint, and the batch endpoint.

Both servers run under gunicorn with the same options (``api.server``'s, same workers and
threads); the load comes from ``wrk`` (a second process; ``apt-get install wrk``) with
keep-alive connections. Everything lands in a Redis database of its own, emptied afterwards.

    python scripts/bench_intake.py [--seconds 10] [--connections 16] [--workers 2] [--threads 4]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import redis
import requests

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

JOB = {"image": "s3://bench-bucket/images/cat.jpg", "text": "a cat on a sofa", "metadata": {"post": 42}}


def serve_bare(port: int, workers: int, threads: int, redis_url: str) -> None:
    """Serve a Flask app whose one endpoint LPUSHes the body to a Redis list, under gunicorn."""
    from flask import Flask, request
    from gunicorn.app.base import BaseApplication

    app = Flask("bare")
    client = redis.Redis.from_url(redis_url)

    @app.post("/v1/jobs")
    def push() -> Any:
        client.lpush("bench:bare", request.get_data())
        return {"status": "queued"}, 202

    class Server(BaseApplication):  # type: ignore[misc]
        def load_config(self) -> None:
            for key, value in gunicorn_options(port, workers, threads).items():
                self.cfg.set(key, value)

        def load(self) -> Any:
            return app

    Server().run()


def gunicorn_options(port: int, workers: int, threads: int) -> dict[str, Any]:
    """Return the options ``api.server.serve`` uses."""
    return {"bind": f"127.0.0.1:{port}", "workers": workers, "threads": threads,
            "worker_class": "gthread" if threads > 1 else "sync", "graceful_timeout": 30, "timeout": 60,
            "keepalive": 5, "accesslog": "-", "errorlog": "-", "loglevel": "info"}


def wait_up(url: str) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            requests.get(url, timeout=1)
            return
        except requests.ConnectionError:
            time.sleep(0.1)
    raise SystemExit(f"{url} did not come up")


def wrk(url: str, body: dict[str, Any], headers: dict[str, str], *, seconds: int, connections: int) -> dict[str, float]:
    """Run wrk against ``url`` with a POST body; return req/s and latency percentiles (ms)."""
    lua = "wrk.method = 'POST'\nwrk.body = [==[" + json.dumps(body) + "]==]\n"
    lua += "".join(f"wrk.headers[{json.dumps(k)}] = {json.dumps(v)}\n" for k, v in headers.items())
    lua += """
done = function(summary, latency, requests)
  io.write(string.format("JSON {\\"rps\\": %f, \\"p50\\": %f, \\"p99\\": %f, \\"non2xx\\": %d, \\"errors\\": %d}\\n",
    summary.requests / (summary.duration / 1e6), latency:percentile(50) / 1000, latency:percentile(99) / 1000,
    summary.errors.status, summary.errors.connect + summary.errors.read + summary.errors.write + summary.errors.timeout))
end
"""
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as script:
        script.write(lua)
    out = subprocess.run(["wrk", "-t2", f"-c{connections}", f"-d{seconds}s", "-s", script.name, url],
                         capture_output=True, text=True, check=True).stdout
    os.unlink(script.name)
    match = re.search(r"^JSON (.*)$", out, re.M)
    assert match, out
    return json.loads(match.group(1))  # type: ignore[no-any-return]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--threads", type=int, default=4)
    parser.add_argument("--batch-size", type=int, default=100)
    parser.add_argument("--redis-url", default="redis://127.0.0.1:6379/13")
    parser.add_argument("--serve-bare", type=int, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve_bare:
        serve_bare(args.serve_bare, args.workers, args.threads, args.redis_url)
        return 0

    from core.keys import KeyStore
    from tests.helpers import free_port

    client = redis.Redis.from_url(args.redis_url)
    client.flushdb()
    _, key = KeyStore(client).create("bench", buckets=["bench-bucket"])
    env = {k: v for k, v in os.environ.items() if not k.startswith("VERIFIER_")}
    env.update(VERIFIER_REDIS_URL=args.redis_url, VERIFIER_RATE_LIMIT="1000000/second",
               VERIFIER_TENANT_MAX_QUEUED="100000000", VERIFIER_AUTH_ENABLED="true", VERIFIER_LOG_LEVEL="warning")
    api_port, bare_port = free_port(), free_port()
    quiet = {"stdout": subprocess.DEVNULL, "stderr": subprocess.DEVNULL, "env": env}
    procs = [
        subprocess.Popen([sys.executable, "-m", "verifier", "api", "--port", str(api_port),
                          "--workers", str(args.workers), "--threads", str(args.threads)], **quiet),
        subprocess.Popen([sys.executable, __file__, "--serve-bare", str(bare_port), "--workers", str(args.workers),
                          "--threads", str(args.threads), "--redis-url", args.redis_url], **quiet),
    ]
    results: dict[str, Any] = {"workers": args.workers, "threads": args.threads, "connections": args.connections,
                               "seconds": args.seconds, "cpus": os.cpu_count()}
    try:
        wait_up(f"http://127.0.0.1:{api_port}/healthz")
        wait_up(f"http://127.0.0.1:{bare_port}/")
        auth = {"Authorization": f"Bearer {key}", "Content-Type": "application/json"}
        run = {"seconds": args.seconds, "connections": args.connections}
        results["bare_lpush"] = wrk(f"http://127.0.0.1:{bare_port}/v1/jobs", JOB,
                                    {"Content-Type": "application/json"}, **run)
        results["post_jobs"] = wrk(f"http://127.0.0.1:{api_port}/v1/jobs", JOB, auth, **run)
        batch = wrk(f"http://127.0.0.1:{api_port}/v1/jobs/batch", {"jobs": [JOB] * args.batch_size}, auth,
                    seconds=args.seconds, connections=max(2, args.connections // 4))
        batch["jobs_per_s"] = batch["rps"] * args.batch_size
        results["batch"] = {"size": args.batch_size, **batch}
        results["queued_jobs"] = client.zcard("cv:idx:bench:all")
    finally:
        for proc in procs:
            proc.terminate()
        for proc in procs:
            proc.wait(30)
        client.flushdb()
        client.close()
    print(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
