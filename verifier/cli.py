"""The ``verifier`` command: serve the API, run workers, the demo, the benchmark, model tools."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Sequence

from core.names import VERIFY_QUEUE, WEBHOOK_QUEUE
from core.settings import Settings, SettingsError, str_tuple


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="verifier", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    api = sub.add_parser("api", help="serve the intake API under gunicorn")
    api.add_argument("--host", default="127.0.0.1")
    api.add_argument("--port", type=int, default=8000)
    api.add_argument("--workers", type=int, default=min(4, (os.cpu_count() or 1) * 2))
    api.add_argument("--threads", type=int, default=4)

    worker = sub.add_parser("worker", help="run a Celery worker")
    worker.add_argument("--queues", default=VERIFY_QUEUE, help=f"comma-separated: {VERIFY_QUEUE},{WEBHOOK_QUEUE}")
    worker.add_argument("--concurrency", type=int, default=None, help="pool threads (default: 2 x batch images)")
    worker.add_argument("--name", default=None, help="Celery node name")

    demo = sub.add_parser("demo", help="start what is needed, submit real jobs, print results")
    demo.add_argument("--model", default=None, help="model spec (default: the hub model, else random:base)")
    demo.add_argument("--keep-running", action="store_true", help="leave the stack up after the demo")

    bench = sub.add_parser("bench", help="benchmark the engine and the whole system")
    bench.add_argument("--model", default="random:base")
    bench.add_argument("--images", type=int, default=8, help="distinct images per engine run")
    bench.add_argument("--texts", type=int, default=8, help="texts for the one-image run")
    bench.add_argument("--naive-pairs", type=int, default=4)
    bench.add_argument("--system-jobs", type=int, default=16)
    bench.add_argument("--repeats", type=int, default=2, help="passes of each timed row (engine and system); the best is reported")
    bench.add_argument("--skip-system", action="store_true")
    bench.add_argument("--variants", action=argparse.BooleanOptionalAction, default=True,
                       help="on CPU, also time int8 and (where native) bfloat16, with their deviation")
    bench.add_argument("--out", default="bench-results/bench.json")

    model = sub.add_parser("model", help="model tools")
    model_sub = model.add_subparsers(dest="model_command", required=True)
    save = model_sub.add_parser("save", help="write a model (hub id, directory, random:tiny|base) to a directory")
    save.add_argument("spec")
    save.add_argument("directory")
    check = model_sub.add_parser("check", help="load the configured model and score one pair")
    check.add_argument("--spec", default=None)

    from verifier.keys import add_parser as add_keys_parser

    add_keys_parser(sub)
    from verifier.worker_health import add_parser as add_worker_health_parser

    add_worker_health_parser(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``verifier`` command."""
    args = _parser().parse_args(argv)
    try:
        settings = Settings.from_env()
    except SettingsError as exc:
        print(f"verifier: {exc}", file=sys.stderr)
        return 2
    logging.basicConfig(level=settings.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    handler = _COMMANDS[args.command]
    return handler(settings, args)


def _api(settings: Settings, args: argparse.Namespace) -> int:
    from api.server import serve

    serve(settings, host=args.host, port=args.port, workers=args.workers, threads=args.threads)
    return 0


def _worker(settings: Settings, args: argparse.Namespace) -> int:
    from worker.main import run_worker

    queues = str_tuple(args.queues)
    unknown = set(queues) - {VERIFY_QUEUE, WEBHOOK_QUEUE}
    if unknown or not queues:
        print(f"verifier worker: unknown queue(s) {sorted(unknown)}; use {VERIFY_QUEUE},{WEBHOOK_QUEUE}",
              file=sys.stderr)
        return 2
    return run_worker(settings, queues=queues, concurrency=args.concurrency, name=args.name)


def _demo(settings: Settings, args: argparse.Namespace) -> int:
    from verifier.demo import run_demo

    return run_demo(settings, model=args.model, keep_running=args.keep_running)


def _bench(settings: Settings, args: argparse.Namespace) -> int:
    from verifier.bench import run_bench

    return run_bench(settings, args)


def _model(settings: Settings, args: argparse.Namespace) -> int:
    from worker.model import ModelLoadError

    try:
        if args.model_command == "save":
            from worker.model import save_model

            save_model(args.spec, args.directory)
            print(f"saved {args.spec} to {args.directory}")
            return 0
        from worker.main import check_model

        return check_model(settings, spec=args.spec)
    except ModelLoadError as exc:
        print(f"verifier model: {exc}", file=sys.stderr)
        return 1


def _keys(settings: Settings, args: argparse.Namespace) -> int:
    from verifier.keys import run_keys

    return run_keys(settings, args)


def _worker_health(settings: Settings, args: argparse.Namespace) -> int:
    from verifier.worker_health import run_worker_health

    return run_worker_health(settings, args)


_COMMANDS = {"keys": _keys, "api": _api, "worker": _worker, "demo": _demo, "bench": _bench, "model": _model,
             "worker-health": _worker_health}

if __name__ == "__main__":
    sys.exit(main())
