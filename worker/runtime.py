"""What a worker process holds for its lifetime: the warm model, clients, background threads."""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
import uuid
from typing import Any

import redis
from celery import Celery

from core.celery_config import PRIORITIES
from core.jobs import Job, ModelInfo
from core.metrics import Recorder, broker_redis
from core.names import VERIFY_QUEUE, VERIFY_TASK, WEBHOOK_QUEUE, WEBHOOK_TASK
from core.settings import Settings
from core.store import JobStore
from core.workers import is_alive, remove_worker, write_heartbeat
from worker.watchdog import Watchdog

log = logging.getLogger(__name__)


def worker_name() -> str:
    """Return a name unique to this worker process."""
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"


class Runtime:
    """Everything a worker process keeps warm, passed to the code that uses it."""

    def __init__(self, settings: Settings, app: Celery, *, queues: tuple[str, ...]) -> None:
        self.settings = settings
        self.app = app
        self.queues = queues
        self.name = worker_name()
        self.redis = redis.Redis.from_url(settings.redis_url, socket_connect_timeout=5, socket_timeout=30)
        self.store = JobStore(self.redis, result_ttl_seconds=settings.result_ttl_seconds)
        self.metrics = Recorder(self.redis)
        self.started_at = time.time()
        self.info: dict[str, Any] = {"queues": list(queues), "pid": os.getpid(), "host": socket.gethostname(),
                                     "started_at": self.started_at, "model_loaded": False}
        self.runner: Any = None
        self.batcher: Any = None
        self._stop = threading.Event()
        if VERIFY_QUEUE in queues:
            self._load_model()
        self.webhooks: Any = None
        if WEBHOOK_QUEUE in queues:
            from worker.webhooks import WebhookService

            self.webhooks = WebhookService(settings, self.store, self.redis, name=self.name,
                                           enqueue=self._enqueue_webhook)
            self.webhooks.start()
        self.watchdog: Watchdog | None = None
        if VERIFY_QUEUE in queues:
            self.watchdog = Watchdog(
                self.redis, self.store, self._enqueue_verify, name=self.name,
                broker=broker_redis(settings, self.redis),
                interval=settings.worker_heartbeat_seconds,
                stale_after=max(2 * settings.worker_dead_after_seconds, 10.0),
                stuck_after=float(settings.visibility_timeout_seconds),
            )
        self._heartbeat = threading.Thread(target=self._beat, name="heartbeat", daemon=True)
        self._heartbeat.start()

    # --- start-up -------------------------------------------------------------------------
    def _load_model(self) -> None:
        from worker.batcher import MicroBatcher
        from worker.engine import Engine
        from worker.images import create_s3_client
        from worker.model import load_model
        from worker.verify import ImageLimits, JobRunner, Preprocessing

        s = self.settings
        began = time.perf_counter()
        loaded = load_model(s.model, device=s.device, dtype=s.dtype, revision=s.model_revision, quantize=s.quantize)
        engine = Engine(loaded)
        engine.warmup()
        load_seconds = time.perf_counter() - began
        log.info("model %s (%s) warm on %s/%s in %.1fs", loaded.name, loaded.revision, loaded.device,
                 loaded.dtype, load_seconds)
        if loaded.random_weights:
            log.warning("model %s has RANDOM weights: its scores are meaningless", s.model)
        self.batcher = MicroBatcher(engine.score, max_pairs=s.batch_max_pairs, max_images=s.batch_max_images,
                                    max_wait_ms=s.batch_max_wait_ms, on_batch=self.metrics.batch)
        self.info.update(model=loaded.name, revision=loaded.revision, device=str(loaded.device),
                         dtype=str(loaded.dtype).removeprefix("torch."), model_loaded=True,
                         random_weights=loaded.random_weights, load_seconds=round(load_seconds, 3))
        self.runner = JobRunner(
            store=self.store,
            s3=create_s3_client(s),
            submit=self.batcher.submit,
            model=ModelInfo(name=loaded.name, revision=loaded.revision),
            preprocessing=Preprocessing(size=engine.image_size, mean=tuple(engine.mean), std=tuple(engine.std)),
            limits=ImageLimits(max_bytes=s.max_image_bytes, max_pixels=s.max_image_pixels, retries=s.s3_retries),
            worker_name=self.name,
            max_starts=s.job_max_starts,
            is_alive=lambda name: is_alive(self.redis, name),
            on_finished=self._finished,
        )

    # --- tasks ------------------------------------------------------------------------------
    def verify(self, job_id: str) -> None:
        """Run one verification job."""
        if self.runner is None:
            raise RuntimeError(f"worker {self.name} does not consume {VERIFY_QUEUE!r} and has no model")
        self.runner.run(job_id)

    def deliver_webhook(self, job_id: str) -> None:
        """Make the webhook attempt due for ``job_id`` (retries are scheduled, not slept on)."""
        if self.webhooks is None:
            raise RuntimeError(f"worker {self.name} does not consume {WEBHOOK_QUEUE!r}")
        self.webhooks.deliver(job_id)

    def _finished(self, job: Job, stages: dict[str, float]) -> None:
        self.metrics.job(job, stages=stages)
        if job.webhook is not None:
            try:
                self._enqueue_webhook(job.id)
            except Exception as exc:  # noqa: BLE001 - the store's backstop schedule sends it later
                log.warning("could not enqueue the webhook of job %s (%s); the schedule will send it", job.id, exc)

    # --- background ---------------------------------------------------------------------
    def _beat(self) -> None:
        interval = self.settings.worker_heartbeat_seconds
        while not self._stop.is_set():
            try:
                info = dict(self.info)
                if self.batcher is not None:
                    stats = self.batcher.stats
                    info.update(batches=stats.batches, pairs=stats.pairs, jobs=stats.requests,
                                mean_batch_pairs=round(stats.mean_batch_pairs, 2))
                write_heartbeat(self.redis, self.name, info, ttl=self.settings.worker_dead_after_seconds)
                if self.watchdog is not None:
                    self.watchdog.sweep()
            except redis.RedisError as exc:
                log.warning("heartbeat failed (Redis): %s", exc)
            except Exception:  # noqa: BLE001 - the heartbeat thread must outlive any bug
                log.exception("heartbeat failed")
            self._stop.wait(interval)

    def _enqueue_webhook(self, job_id: str) -> None:
        self.app.send_task(WEBHOOK_TASK, args=[job_id], queue=WEBHOOK_QUEUE)

    def _enqueue_verify(self, job: Job) -> None:
        self.app.send_task(VERIFY_TASK, args=[job.id], queue=VERIFY_QUEUE,
                           priority=PRIORITIES.get(job.priority, PRIORITIES["normal"]))

    def close(self) -> None:
        """Stop background threads and deregister."""
        self._stop.set()
        if self.batcher is not None:
            self.batcher.close()
        if self.webhooks is not None:
            self.webhooks.close()
        try:
            remove_worker(self.redis, self.name)
        except redis.RedisError:
            pass


def create_runtime(settings: Settings, app: Celery, *, queues: tuple[str, ...]) -> Runtime:
    """Build the runtime of a worker process (loads and warms the model for ``verify``)."""
    return Runtime(settings, app, queues=queues)
