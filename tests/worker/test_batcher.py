"""MicroBatcher: batching under concurrent submits, isolation of failures, waits, draining."""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence

import pytest
import torch

from worker.batcher import MicroBatcher
from worker.engine import EngineRequest, PairScore

PIXELS = torch.zeros(3, 4, 4)


def _request(key: str, *texts: str) -> EngineRequest:
    return EngineRequest(key, PIXELS, texts)


class RecordingScorer:
    """A pure stand-in for Engine.score: each text scores as its length; 'boom' raises."""

    def __init__(self, delay: float = 0.0) -> None:
        self.calls: list[list[EngineRequest]] = []
        self.delay = delay
        self.lock = threading.Lock()

    def __call__(self, requests: Sequence[EngineRequest]) -> list[list[PairScore]]:
        with self.lock:
            self.calls.append(list(requests))
        time.sleep(self.delay)
        if any("boom" in text for r in requests for text in r.texts):
            raise ValueError("bad request")
        return [[PairScore(float(len(t)), float(len(r.image_key))) for t in r.texts] for r in requests]


def test_concurrent_submits_are_batched_and_each_future_gets_its_own_result() -> None:
    scorer = RecordingScorer(delay=0.02)
    batcher = MicroBatcher(scorer, max_pairs=16, max_images=8, max_wait_ms=50)
    requests = [_request("k" * (i % 5 + 1), "x" * (i + 1), "y" * (2 * i + 1)) for i in range(20)]
    futures: dict[int, object] = {}

    def submit(i: int) -> None:
        futures[i] = batcher.submit(requests[i])

    threads = [threading.Thread(target=submit, args=(i,)) for i in range(len(requests))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for i, req in enumerate(requests):
        scores = futures[i].result(timeout=5)  # type: ignore[attr-defined]
        assert [s.match_probability for s in scores] == [float(len(t)) for t in req.texts]
        assert all(s.cosine_similarity == len(req.image_key) for s in scores)
    batcher.close()
    assert len(scorer.calls) < len(requests)
    assert all(sum(len(r.texts) for r in call) <= 16 for call in scorer.calls)
    assert all(len({r.image_key for r in call}) <= 8 for call in scorer.calls)
    stats = batcher.stats
    assert stats.requests == len(requests) and stats.pairs == 40 and stats.batches == len(scorer.calls)
    assert stats.mean_batch_pairs > 2


def test_a_failing_request_fails_alone() -> None:
    scorer = RecordingScorer()
    batcher = MicroBatcher(scorer, max_pairs=64, max_images=16, max_wait_ms=200)
    good1, bad, good2 = (batcher.submit(_request(k, t)) for k, t in (("a", "ok"), ("b", "boom"), ("c", "fine")))
    assert good1.result(timeout=5)[0].match_probability == 2.0
    assert good2.result(timeout=5)[0].match_probability == 4.0
    with pytest.raises(ValueError, match="bad request"):
        bad.result(timeout=5)
    batcher.close()
    assert len(scorer.calls[0]) == 3  # they were batched, then retried one by one
    assert batcher.stats.failures == 1


def test_a_lone_request_is_not_held_past_max_wait() -> None:
    batcher = MicroBatcher(RecordingScorer(), max_pairs=64, max_images=16, max_wait_ms=30)
    start = time.monotonic()
    assert batcher.submit(_request("a", "hello")).result(timeout=5)[0].match_probability == 5.0
    elapsed = time.monotonic() - start
    batcher.close()
    # A generous bound on the wait semantics, not a performance figure: a batcher that held a
    # lone request for seconds (or until the result timeout) would fail here.
    assert elapsed < 2.0, f"lone request with max_wait_ms=30 was held {elapsed:.2f} s"


def test_full_batch_does_not_wait() -> None:
    scorer = RecordingScorer()
    batcher = MicroBatcher(scorer, max_pairs=2, max_images=16, max_wait_ms=60_000)
    futures = [batcher.submit(_request("a", "x")) for _ in range(2)]
    assert [f.result(timeout=5)[0].match_probability for f in futures] == [1.0, 1.0]
    batcher.close()


def test_request_larger_than_max_pairs_runs_alone() -> None:
    scorer = RecordingScorer()
    batcher = MicroBatcher(scorer, max_pairs=2, max_images=2, max_wait_ms=20)
    big = batcher.submit(_request("a", "a", "bb", "ccc"))
    small = batcher.submit(_request("b", "d"))
    assert len(big.result(timeout=5)) == 3 and len(small.result(timeout=5)) == 1
    batcher.close()
    assert [len(call) for call in scorer.calls] == [1, 1]


def test_max_images_caps_a_batch() -> None:
    scorer = RecordingScorer()
    batcher = MicroBatcher(scorer, max_pairs=100, max_images=2, max_wait_ms=100)
    futures = [batcher.submit(_request(key, "t")) for key in ("a", "b", "a", "c", "d")]
    for f in futures:
        f.result(timeout=5)
    batcher.close()
    assert all(len({r.image_key for r in call}) <= 2 for call in scorer.calls)


def test_close_drains_pending_work() -> None:
    scorer = RecordingScorer(delay=0.01)
    batcher = MicroBatcher(scorer, max_pairs=3, max_images=16, max_wait_ms=10_000)
    futures = [batcher.submit(_request("a", str(i))) for i in range(10)]
    batcher.close(timeout=10)
    assert all(f.done() and len(f.result()) == 1 for f in futures)
    with pytest.raises(RuntimeError, match="closed"):
        batcher.submit(_request("a", "late"))
