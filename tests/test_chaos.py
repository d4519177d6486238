"""Chaos: jobs through the API while workers are SIGKILLed, Redis restarts and webhooks flake.

Every accepted job must end with exactly one final status, no job may be scored twice into
different results, and every webhook must be delivered (de-duplicated by webhook-id) or
marked failed. The size is bounded for CI (``VERIFIER_CHAOS_JOBS``, default 200).
"""

from __future__ import annotations

import io
import json
import os
import random
import threading
import time
from collections import Counter, defaultdict
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
import requests
from PIL import Image

from core.settings import Settings
from tests.helpers import wait_for
from tests.processes import Proc, running_api, start_worker, wait_worker_ready, worker_settings
from tests.redis_server import RedisServer

pytestmark = pytest.mark.chaos
JOBS = int(os.environ.get("VERIFIER_CHAOS_JOBS", "200"))
SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"


class FlakyReceiver:
    """A webhook consumer that answers 500 to about a third of the deliveries."""

    def __init__(self, seed: int = 7) -> None:
        self.rng = random.Random(seed)
        self.lock = threading.Lock()
        self.requests: list[tuple[str, int, dict]] = []  # (webhook-id, status answered, payload)
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - http.server's naming
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                with receiver.lock:
                    status = 500 if receiver.rng.random() < 0.33 else 200
                    receiver.requests.append((self.headers["webhook-id"], status, json.loads(body)))
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def _jpeg(seed: int) -> bytes:
    rng = random.Random(seed)
    buf = io.BytesIO()
    Image.new("RGB", (96, 64), tuple(rng.randrange(256) for _ in range(3))).save(buf, format="JPEG")
    return buf.getvalue()


def test_chaos(s3_endpoint, s3_client, bucket) -> None:  # type: ignore[no-untyped-def]
    uris = []
    for i in range(8):
        s3_client.put_object(Bucket=bucket, Key=f"chaos/{i}.jpg", Body=_jpeg(i))
        uris.append(f"s3://{bucket}/chaos/{i}.jpg")
    server = RedisServer(appendonly=True)
    server.start()
    receiver = FlakyReceiver()
    settings = worker_settings(Settings.from_env(
        {}, redis_url=server.url, s3_endpoint_url=s3_endpoint, model="random:tiny", batch_max_wait_ms=5,
        auth_enabled=False, job_max_starts=10, webhook_secrets=(SECRET,), webhook_allowlist=("127.0.0.0/8",),
        webhook_retry_delays=(0.2, 0.5, 1.0, 1.0, 2.0, 2.0, 3.0, 3.0), webhook_poll_seconds=0.2,
    ), worker_dead_after_seconds=2.0)
    counts: Counter[str] = Counter()
    workers: list[Proc] = []
    try:
        with running_api(settings, workers=2) as base:
            hooks = start_worker(settings, queues="webhooks", name="chaos-webhooks")
            workers.extend(start_worker(settings, name=f"chaos-verify-{i}") for i in range(2))
            for w in [hooks, *workers]:
                wait_worker_ready(settings, w)
            ids: list[str] = []
            done_submitting = threading.Event()
            submit_errors: list[BaseException] = []

            def submit() -> None:
                try:
                    submit_all()
                except BaseException as exc:  # noqa: BLE001 - re-raised in the test's thread after join()
                    submit_errors.append(exc)
                finally:
                    done_submitting.set()

            def submit_all() -> None:
                rng = random.Random(1)
                for i in range(JOBS):
                    body = {"image": uris[i % len(uris)], "texts": ["a photo", f"caption {i % 5}"],
                            "webhook_url": receiver.url, "metadata": {"n": i}}
                    deadline = time.monotonic() + 60
                    while True:
                        try:
                            resp = requests.post(f"{base}/v1/jobs", json=body, timeout=10,
                                                 headers={"Idempotency-Key": f"chaos-{i}"})
                        except requests.RequestException:
                            resp = None
                        if resp is not None and resp.status_code in (200, 202):
                            ids.append(resp.json()["id"])
                            break
                        counts["submit_retries"] += 1
                        assert resp is None or resp.status_code == 503, resp.text
                        assert time.monotonic() < deadline, "the API did not come back"
                        time.sleep(0.2)
                    time.sleep(rng.uniform(0, 0.08))

            submitter = threading.Thread(target=submit)
            submitter.start()
            rng = random.Random(2)
            restarted = False
            # Kill a random verify worker every couple of seconds while jobs arrive; restart
            # Redis once, cleanly, from its append-only file.
            while not done_submitting.is_set():
                time.sleep(rng.uniform(0.5, 1.5))
                victim = workers.pop(rng.randrange(len(workers)))
                victim.crash()
                counts["workers_killed"] += 1
                workers.append(start_worker(settings, name=f"chaos-verify-r{counts['workers_killed']}"))
                if not restarted and counts["workers_killed"] == 2:
                    server.restart(down_for=1.5)
                    restarted = True
                    counts["redis_restarts"] += 1
            submitter.join()
            if submit_errors:
                raise submit_errors[0]
            assert len(ids) == JOBS and len(set(ids)) == JOBS

            def final_docs() -> list[dict] | None:
                docs = [requests.get(f"{base}/v1/jobs/{i}", timeout=10).json() for i in ids]
                finished = all(d["status"] in ("succeeded", "failed", "canceled") for d in docs)
                settled = all(d["webhook"]["status"] in ("delivered", "failed") for d in docs if finished)
                return docs if finished and settled else None

            docs = wait_for(final_docs, timeout=240, interval=1.0, what="every job and webhook to settle")
            hooks.stop()
    finally:
        for w in workers:
            w.stop()
        receiver.close()
        server.close()

    # Every accepted job has exactly one final status.
    statuses = Counter(d["status"] for d in docs)
    assert set(statuses) <= {"succeeded", "failed"}, statuses
    crashed = [d for d in docs if d["status"] == "failed"]
    assert all(d["error"]["code"] == "worker_crashed" for d in crashed), [d["error"] for d in crashed]
    # No job was scored twice into different results: every payload sent agrees with the store.
    payloads: dict[str, list[dict]] = defaultdict(list)
    answered: dict[str, list[int]] = defaultdict(list)
    for webhook_id, status, payload in receiver.requests:
        payloads[payload["data"]["id"]].append(payload)
        answered[webhook_id].append(status)
    by_id = {d["id"]: d for d in docs}
    for job_id, sent in payloads.items():
        assert {json.dumps(p["data"]["result"], sort_keys=True) for p in sent} == {
            json.dumps(by_id[job_id]["result"], sort_keys=True)}
        assert len({p["type"] for p in sent}) == 1
    # Every webhook was delivered (once as far as the consumer de-duplicates) or marked failed.
    delivered = [d for d in docs if d["webhook"]["status"] == "delivered"]
    failed_hooks = [d for d in docs if d["webhook"]["status"] == "failed"]
    for d in delivered:
        assert 200 in answered[d["webhook"]["id"]], d["webhook"]
    assert len(delivered) + len(failed_hooks) == JOBS
    print(
        f"\nchaos: {JOBS} jobs accepted ({counts['submit_retries']} submissions retried through 503s), "
        f"{counts['workers_killed']} verify workers SIGKILLed, {counts['redis_restarts']} Redis restart; "
        f"final: {dict(statuses)}; jobs run more than once: {sum(d['attempts'] > 1 for d in docs)}; "
        f"webhook requests: {len(receiver.requests)} ({sum(s != 200 for _, s, _ in receiver.requests)} answered 500), "
        f"delivered {len(delivered)}, failed {len(failed_hooks)}, "
        f"consumer duplicates after a 200: {sum(max(0, a.count(200) - 1) for a in answered.values())}"
    )
