"""Running one verification job: fetch, decode, score, record (no Celery here)."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any, TypeVar

from core.errors import Expired, JobError, ServiceUnavailable, WorkerCrashed
from core.jobs import ImageInfo, Job, JobResult, Mode, ModelInfo, PairResult, Status
from core.s3uri import parse_s3_uri
from core.store import JobStore
from worker.engine import EngineRequest, PairScore
from worker.images import decode_image, fetch_image
from worker.preprocess import prepare_pixels

log = logging.getLogger(__name__)
T = TypeVar("T")


@dataclass(frozen=True)
class ImageLimits:
    max_bytes: int
    max_pixels: int
    retries: int


@dataclass(frozen=True)
class Preprocessing:
    size: int
    mean: tuple[float, ...]
    std: tuple[float, ...]


class JobRunner:
    """Take a job from queued to a final status, exactly once per successful start."""

    def __init__(
        self,
        *,
        store: JobStore,
        s3: Any,
        submit: Callable[[EngineRequest], Future[list[PairScore]]],
        model: ModelInfo,
        preprocessing: Preprocessing,
        limits: ImageLimits,
        worker_name: str,
        max_starts: int,
        is_alive: Callable[[str | None], bool],
        on_finished: Callable[[Job], None] = lambda job: None,
        observe: Callable[[str, float], None] = lambda stage, seconds: None,
        store_patience: float = 120.0,
    ) -> None:
        self.store = store
        self.s3 = s3
        self.submit = submit
        self.model = model
        self.pre = preprocessing
        self.limits = limits
        self.name = worker_name
        self.max_starts = max_starts
        self.is_alive = is_alive
        self.on_finished = on_finished
        self.observe = observe
        self.store_patience = store_patience

    def run(self, job_id: str) -> Job | None:
        """Run ``job_id`` if it is ours to run; return the job in its final state, or None."""
        existing = self._durably(lambda: self.store.get(job_id))
        if existing is None or existing.status.terminal:
            return None
        if existing.starts >= self.max_starts and existing.status in (Status.QUEUED, Status.RUNNING):
            if existing.status == Status.QUEUED or not self.is_alive(existing.worker):
                return self._finish_failed(job_id, WorkerCrashed(
                    f"the job was started {existing.starts} times without finishing; it is not retried again"
                ), worker=None)
        job = self._durably(lambda: self.store.start(
            job_id, worker=self.name, may_take_over=lambda j: not self.is_alive(j.worker)))
        if job is None:
            return None  # another worker runs it, or it ended meanwhile
        if _expired(job):
            return self._finish_failed(job_id, Expired("the job's deadline passed before it ran"))
        try:
            result = self._score(job)
        except JobError as exc:
            log.info("job %s failed: %s (%s)", job_id, exc.code, exc.message)
            return self._finish_failed(job_id, exc)
        except Exception:  # noqa: BLE001 - one broken job must not take the worker down
            log.exception("job %s failed unexpectedly", job_id)
            return self._finish_failed(job_id, JobError("internal error while scoring; it has been logged"))
        done = self._durably(lambda: self.store.succeed(job_id, result, worker=self.name))
        if done is not None:
            self.on_finished(done)
        return done

    def _durably(self, call: Callable[[], T]) -> T:
        """Run a store call, waiting out a Redis outage (bounded) rather than losing the job."""
        deadline = time.monotonic() + self.store_patience
        delay = 0.2
        while True:
            try:
                return call()
            except ServiceUnavailable:
                if time.monotonic() + delay > deadline:
                    raise
                log.warning("the job store is unreachable; retrying in %.1fs", delay)
                time.sleep(delay)
                delay = min(delay * 2, 5.0)

    def _finish_failed(self, job_id: str, error: JobError, *, worker: str | None = "self") -> Job | None:
        owner = self.name if worker == "self" else worker
        done = self._durably(lambda: self.store.fail(job_id, error, worker=owner))
        if done is not None:
            self.on_finished(done)
        return done

    def _score(self, job: Job) -> JobResult:
        started = time.perf_counter()
        parse_s3_uri(job.image)
        fetched = fetch_image(self.s3, job.image, max_bytes=self.limits.max_bytes, retries=self.limits.retries)
        fetched_at = time.perf_counter()
        decoded = decode_image(fetched.data, max_pixels=self.limits.max_pixels, target_size=self.pre.size)
        pixels = prepare_pixels(decoded.image, size=self.pre.size, mean=self.pre.mean, std=self.pre.std)
        decoded_at = time.perf_counter()
        self.observe("fetch", fetched_at - started)
        self.observe("decode", decoded_at - fetched_at)
        key = f"{job.image}@{fetched.etag}"
        scores = self.submit(EngineRequest(image_key=key, pixels=pixels, texts=tuple(job.texts))).result()
        self.observe("inference", time.perf_counter() - decoded_at)
        return build_result(job, scores, model=self.model, image=ImageInfo(
            etag=fetched.etag, width=decoded.width, height=decoded.height
        ))


def build_result(job: Job, scores: list[PairScore], *, model: ModelInfo, image: ImageInfo) -> JobResult:
    """Compare each pair's score with the job's threshold and assemble the result."""
    pairs = []
    for text, score in zip(job.texts, scores, strict=True):
        value = score.match_probability if job.mode == Mode.ITM else score.cosine_similarity
        pairs.append(PairResult(
            text=text,
            match_probability=score.match_probability,
            cosine_similarity=score.cosine_similarity,
            match=value >= job.threshold,
        ))
    return JobResult(match=all(p.match for p in pairs), scores=pairs, model=model, image=image)


def _expired(job: Job) -> bool:
    if not job.deadline:
        return False
    deadline = datetime.fromisoformat(job.deadline.replace("Z", "+00:00"))
    return datetime.now(timezone.utc) > deadline

