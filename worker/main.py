"""Start a worker process: load and warm the model, then consume."""

from __future__ import annotations

import logging
import socket
import sys
import time

from core.names import VERIFY_QUEUE
from core.settings import Settings

log = logging.getLogger(__name__)


def default_concurrency(settings: Settings, queues: tuple[str, ...]) -> int:
    """Return the pool size: enough threads to fill a batch while the next one is fetched."""
    if VERIFY_QUEUE in queues:
        return max(4, 2 * settings.batch_max_images)
    return 16


def run_worker(settings: Settings, *, queues: tuple[str, ...], concurrency: int | None, name: str | None) -> int:
    """Run a Celery worker in this process until it is stopped; return its exit status."""
    from worker.celery_app import create_celery
    from worker.model import ModelLoadError
    from worker.runtime import create_runtime

    app = create_celery(settings, queues=queues)
    try:
        # Load the model before consuming: a worker whose model cannot load must not take jobs.
        app.runtime = create_runtime(settings, app, queues=queues)
    except ModelLoadError as exc:
        print(f"verifier worker: cannot load model {settings.model!r}: {exc}", file=sys.stderr)
        return 1
    threads = concurrency or default_concurrency(settings, queues)
    node = name or f"{'+'.join(queues)}-{socket.gethostname()}-{int(time.time() * 1000) % 100000}@%h"
    argv = [
        "worker", "--pool", "threads", "--concurrency", str(threads), "--queues", ",".join(queues),
        "--hostname", node, "--without-gossip", "--without-mingle", "--loglevel", settings.log_level.upper(),
    ]
    try:
        app.worker_main(argv)
    finally:
        app.runtime.close()
    return 0


def check_model(settings: Settings, *, spec: str | None = None) -> int:
    """Load the model, score one pair, and print what it found (a health check that touches it)."""
    from PIL import Image

    from worker.engine import Engine, EngineRequest
    from worker.model import load_model
    from worker.preprocess import prepare_pixels

    began = time.perf_counter()
    loaded = load_model(spec or settings.model, device=settings.device, dtype=settings.dtype,
                        revision=settings.model_revision, quantize=settings.quantize)
    engine = Engine(loaded)
    pixels = prepare_pixels(Image.new("RGB", (64, 64), (120, 160, 200)), size=engine.image_size,
                            mean=engine.mean, std=engine.std)
    [scores] = engine.score([EngineRequest(image_key="check", pixels=pixels, texts=("a blue square",))])
    print(f"model {loaded.name} revision {loaded.revision} on {loaded.device} ({loaded.dtype}) "
          f"random_weights={loaded.random_weights}: match_probability={scores[0].match_probability:.4f} "
          f"cosine_similarity={scores[0].cosine_similarity:.4f} in {time.perf_counter() - began:.1f}s")
    return 0
