"""Running one verification job: fetch, decode, score, record (no Celery here)."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Any, TypeVar

from core.errors import Expired, JobError, ServiceUnavailable
from core.jobs import ImageInfo, Job, JobResult, Mode, ModelInfo, PairResult, Status, rfc3339_to_epoch
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
        on_finished: Callable[[Job, dict[str, float]], None] = lambda job, stages: None,
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
        self.store_patience = store_patience

    def run(self, job_id: str) -> Job | None:
        """Run ``job_id`` if it is ours to run; return the job in its final state, or None."""
        job = self._durably(lambda: self.store.start(
            job_id, worker=self.name, may_take_over=lambda j: not self.is_alive(j.worker),
            max_starts=self.max_starts))
        if job is None:
            return None  # missing, finished, or running on a live worker
        if job.status == Status.FAILED:  # started too often without finishing: a poison job
            self.on_finished(job, {})
            return job
        if _expired(job):
            return self._finish_failed(job_id, Expired("the job's deadline passed before it ran"))
        stages: dict[str, float] = {}
        try:
            result = self._score(job, stages)
        except JobError as exc:
            log.info("job %s failed: %s (%s)", job_id, exc.code, exc.message)
            return self._finish_failed(job_id, exc, stages)
        except Exception:  # noqa: BLE001 - one broken job must not take the worker down
            log.exception("job %s failed unexpectedly", job_id)
            return self._finish_failed(job_id, JobError("internal error while scoring; it has been logged"), stages)
        done = self._durably(lambda: self.store.succeed(job_id, result, worker=self.name))
        if done is not None:
            self.on_finished(done, stages)
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

    def _finish_failed(self, job_id: str, error: JobError, stages: dict[str, float] | None = None) -> Job | None:
        done = self._durably(lambda: self.store.fail(job_id, error, worker=self.name))
        if done is not None:
            self.on_finished(done, stages or {})
        return done

    def _score(self, job: Job, stages: dict[str, float]) -> JobResult:
        """Fetch, decode and score ``job``'s image; put each stage's seconds in ``stages``."""
        started = time.perf_counter()
        fetched = fetch_image(self.s3, job.image, max_bytes=self.limits.max_bytes, retries=self.limits.retries)
        fetched_at = time.perf_counter()
        decoded = decode_image(fetched.data, max_pixels=self.limits.max_pixels, target_size=self.pre.size)
        pixels = prepare_pixels(decoded.image, size=self.pre.size, mean=self.pre.mean, std=self.pre.std)
        decoded_at = time.perf_counter()
        stages.update(fetch=fetched_at - started, decode=decoded_at - fetched_at)
        key = f"{job.image}@{fetched.etag}"
        scores = self.submit(EngineRequest(image_key=key, pixels=pixels, texts=tuple(job.texts))).result()
        stages["inference"] = time.perf_counter() - decoded_at
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
    deadline = rfc3339_to_epoch(job.deadline)
    return deadline is not None and time.time() > deadline

