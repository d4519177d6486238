"""Gather requests from many jobs into one engine call (a cross-job micro-batcher)."""

from __future__ import annotations

import collections
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from dataclasses import dataclass

from worker.engine import EngineRequest, PairScore

ScoreFn = Callable[[Sequence[EngineRequest]], list[list[PairScore]]]
_Item = tuple[EngineRequest, "Future[list[PairScore]]", float]


@dataclass(frozen=True)
class BatcherStats:
    """Counters for metrics."""

    batches: int
    requests: int
    pairs: int
    failures: int

    @property
    def mean_batch_pairs(self) -> float:
        """Return the mean number of pairs per engine call."""
        return self.pairs / self.batches if self.batches else 0.0


class MicroBatcher:
    """Run submitted requests through ``score_fn`` in batches, on one daemon thread."""

    def __init__(self, score_fn: ScoreFn, *, max_pairs: int, max_images: int, max_wait_ms: float,
                 on_batch: Callable[[int, int], None] | None = None) -> None:
        if max_pairs < 1 or max_images < 1 or max_wait_ms < 0:
            raise ValueError("max_pairs and max_images must be >= 1 and max_wait_ms >= 0")
        self._score_fn = score_fn
        self._on_batch = on_batch  # (requests, pairs) of each successful engine call
        self._max_pairs = max_pairs
        self._max_images = max_images
        self._max_wait = max_wait_ms / 1000.0
        self._pending: collections.deque[_Item] = collections.deque()
        self._cond = threading.Condition()
        self._closed = False
        self._batches = self._requests = self._pairs = self._failures = 0
        self._thread = threading.Thread(target=self._run, name="micro-batcher", daemon=True)
        self._thread.start()

    def submit(self, request: EngineRequest) -> Future[list[PairScore]]:
        """Queue a request; the future resolves to its own list of scores."""
        future: Future[list[PairScore]] = Future()
        with self._cond:
            if self._closed:
                raise RuntimeError("the batcher is closed")
            self._pending.append((request, future, time.monotonic()))
            self._cond.notify()
        return future

    def close(self, timeout: float | None = None) -> None:
        """Finish the pending work, then stop the thread."""
        with self._cond:
            self._closed = True
            self._cond.notify()
        self._thread.join(timeout)

    @property
    def stats(self) -> BatcherStats:
        """Return the counters so far."""
        with self._cond:
            return BatcherStats(self._batches, self._requests, self._pairs, self._failures)

    def _run(self) -> None:
        while True:
            batch = self._next_batch()
            if batch is None:
                return
            self._execute(batch)

    def _next_batch(self) -> list[_Item] | None:
        with self._cond:
            while not self._pending:
                if self._closed:
                    return None
                self._cond.wait()
            # Hold the batch open until it is full or its first request has waited max_wait.
            deadline = self._pending[0][2] + self._max_wait
            while not self._closed and not self._full():
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                self._cond.wait(remaining)
            return self._take()

    def _full(self) -> bool:
        pairs, images = 0, set()
        for request, _, _ in self._pending:
            pairs += len(request.texts)
            images.add(request.image_key)
            if pairs >= self._max_pairs or len(images) >= self._max_images:
                return True
        return False

    def _take(self) -> list[_Item]:
        batch: list[_Item] = [self._pending.popleft()]  # a request over max_pairs runs alone
        pairs, images = len(batch[0][0].texts), {batch[0][0].image_key}
        while self._pending:
            request = self._pending[0][0]
            new_images = len(images | {request.image_key})
            if pairs + len(request.texts) > self._max_pairs or new_images > self._max_images:
                break
            batch.append(self._pending.popleft())
            pairs += len(request.texts)
            images.add(request.image_key)
        return batch

    def _execute(self, batch: list[_Item]) -> None:
        live = [item for item in batch if item[1].set_running_or_notify_cancel()]
        if not live:
            return
        try:
            results = self._call([item[0] for item in live])
        except Exception as exc:
            if len(live) == 1:
                self._count_failure()
                live[0][1].set_exception(exc)
                return
            # Retry one by one so a bad request fails alone and its batch-mates still succeed.
            for item in live:
                try:
                    item[1].set_result(self._call([item[0]])[0])
                except Exception as exc:
                    self._count_failure()
                    item[1].set_exception(exc)
            return
        for item, result in zip(live, results):
            item[1].set_result(result)

    def _call(self, requests: list[EngineRequest]) -> list[list[PairScore]]:
        results = self._score_fn(requests)
        if len(results) != len(requests):
            raise RuntimeError(f"score_fn returned {len(results)} results for {len(requests)} requests")
        pairs = sum(len(r.texts) for r in requests)
        with self._cond:
            self._batches += 1
            self._requests += len(requests)
            self._pairs += pairs
        if self._on_batch is not None:
            self._on_batch(len(requests), pairs)
        return results

    def _count_failure(self) -> None:
        with self._cond:
            self._failures += 1
