"""``verifier bench``: the engine against the naive snippet, then the whole system over HTTP."""

from __future__ import annotations

import argparse
import gc
import json
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import requests

from core.settings import Settings
from verifier.demo import prepare_auth, submit_and_wait
from verifier.stack import LocalStack, s3_bucket

BENCH_BUCKET = "caption-verifier-bench"


def say(message: str) -> None:
    print(f"[bench] {message}", flush=True)


def peak_rss_mib(pid: int) -> float | None:
    """Return the peak resident set size of ``pid`` in MiB (Linux), or None."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


def run_system_bench(settings: Settings, *, model: str, n_jobs: int, width: int, height: int,
                     repeats: int = 1) -> dict[str, Any]:
    """Submit ``n_jobs`` distinct-image jobs through the HTTP API to a real worker and time them
    until the last result is polled; do it ``repeats`` times, each round on images of its own,
    and report the best round, as the engine rows do."""
    from worker.bench import CAPTIONS, make_jpegs

    rounds = max(repeats, 1)
    out: dict[str, Any] = {"jobs": n_jobs, "texts_per_job": 1, "rounds": rounds}
    with LocalStack(say=say) as stack:
        redis_url = stack.ensure_redis(settings.redis_url)
        endpoint = settings.s3_endpoint_url or stack.start_s3()
        s3 = s3_bucket(endpoint, settings.s3_region, BENCH_BUCKET)
        uris = []
        for i, data in enumerate(make_jpegs(n_jobs * rounds + 1, width, height, seed=1)):
            s3.put_object(Bucket=BENCH_BUCKET, Key=f"bench/{i}.jpg", Body=data)
            uris.append(f"s3://{BENCH_BUCKET}/bench/{i}.jpg")
        run = replace(settings, redis_url=redis_url, s3_endpoint_url=endpoint, model=model,
                      batch_max_wait_ms=max(settings.batch_max_wait_ms, 10))
        headers = prepare_auth(run, BENCH_BUCKET)
        base = stack.start_api(run)
        # Cold start: the first job waits in the queue while the worker process starts.
        first = requests.post(f"{base}/v1/jobs", json={"image": uris[-1], "text": CAPTIONS[0]}, headers=headers,
                              timeout=10).json()["id"]
        began = time.perf_counter()
        worker = stack.start_worker(run)
        out["worker_ready_s"] = time.perf_counter() - began
        while requests.get(f"{base}/v1/jobs/{first}", headers=headers, timeout=10).json().get("status") in (
            "queued", "running", None
        ):
            time.sleep(0.1)
        out["cold_start_to_first_result_s"] = time.perf_counter() - began
        round_seconds = []
        for r in range(rounds):
            jobs = [{"image": uris[r * n_jobs + i], "text": CAPTIONS[i % len(CAPTIONS)]} for i in range(n_jobs)]
            start = time.perf_counter()
            docs = submit_and_wait(base, jobs, headers)
            round_seconds.append(time.perf_counter() - start)
            failed = [d for d in docs if d["status"] != "succeeded"]
            if failed:
                raise RuntimeError(f"{len(failed)} bench jobs did not succeed: {failed[0].get('error')}")
        seconds = min(round_seconds)
        out.update(seconds=seconds, pairs=n_jobs, pairs_per_s=n_jobs / seconds,
                   round_pairs_per_s=[n_jobs / s for s in round_seconds],
                   worker_peak_rss_mib=peak_rss_mib(worker.pid))
    return out


def run_cpu_variants(spec: str, *, n_images: int, repeats: int) -> dict[str, Any]:
    """Time the engine on distinct images in float32, int8 (dynamic) and, where the CPU has
    native bfloat16, bfloat16; report each one's speed-up and deviation from float32."""
    from worker.bench import CAPTIONS, engine_requests, make_jpegs
    from worker.engine import Engine
    from worker.model import cpu_has_native_bf16, load_model

    jpegs = make_jpegs(n_images, 1920, 1080)
    jobs = [(f"img{i}", i, (CAPTIONS[i % len(CAPTIONS)],)) for i in range(n_images)]
    variants = [("float32", "float32", "none"), ("int8", "float32", "int8")]
    if cpu_has_native_bf16():
        variants.append(("bfloat16", "bfloat16", "none"))
    rows: dict[str, Any] = {}
    scores: dict[str, list[tuple[float, float]]] = {}
    for name, dtype, quantize in variants:
        engine = Engine(load_model(spec, device="cpu", dtype=dtype, quantize=quantize))
        engine.warmup()
        best = float("inf")
        for _ in range(max(repeats, 1)):
            start = time.perf_counter()
            out = engine.score(engine_requests(engine, jpegs, jobs))
            best = min(best, time.perf_counter() - start)
        scores[name] = [(p.match_probability, p.cosine_similarity) for r in out for p in r]
        rows[name] = {"pairs": n_images, "pairs_per_s": n_images / best}
        del engine
        gc.collect()
    for name, row in rows.items():
        row["speedup_vs_float32"] = row["pairs_per_s"] / rows["float32"]["pairs_per_s"]
        row["max_abs_diff_match_probability"] = max(abs(a[0] - b[0]) for a, b in zip(scores["float32"], scores[name]))
        row["max_abs_diff_cosine"] = max(abs(a[1] - b[1]) for a, b in zip(scores["float32"], scores[name]))
    return rows


def format_variants(rows: dict[str, Any], naive_pairs_per_s: float) -> str:
    """Render the CPU precision variants as text."""
    lines = []
    for name, row in rows.items():
        lines.append(f"{'e_engine_' + name + '_distinct':32} {row['pairs']:>5} {'':>7} {row['pairs_per_s']:>8.3f} "
                     f"{row['pairs_per_s'] / naive_pairs_per_s:>8.2f} {'':>7}   "
                     f"{row['speedup_vs_float32']:.2f}x float32; "
                     f"max |diff| P(match) {row['max_abs_diff_match_probability']:.4f}, "
                     f"cosine {row['max_abs_diff_cosine']:.4f}")
    return "\n".join(lines)


def run_bench(settings: Settings, args: argparse.Namespace) -> int:
    """Run the engine benchmark, then the system one; print a table and write JSON."""
    from worker.bench import format_table, run_engine_bench

    say(f"engine benchmark on {args.model} ({args.images} distinct images, 1 image x {args.texts} texts, "
        f"{args.naive_pairs} naive pairs)")
    results = run_engine_bench(args.model, n_images=args.images, n_texts=args.texts, naive_pairs=args.naive_pairs,
                               repeats=args.repeats)
    gc.collect()
    print(format_table(results), flush=True)
    if args.variants and results["device"] == "cpu":
        say("engine precision variants on CPU (opt-in: VERIFIER_QUANTIZE=int8, VERIFIER_DTYPE=bfloat16)")
        results["variants"] = run_cpu_variants(args.model, n_images=args.images, repeats=args.repeats)
        print(format_variants(results["variants"], results["rows"]["a_naive_per_pair"]["pairs_per_s"]), flush=True)
    if not args.skip_system:
        say(f"system benchmark: {args.system_jobs} jobs through HTTP + Redis + Celery")
        system = run_system_bench(settings, model=args.model, n_jobs=args.system_jobs, width=1920, height=1080,
                                  repeats=args.repeats)
        engine_row = results["rows"]["b_engine_distinct_images"]
        system["vs_engine"] = system["pairs_per_s"] / engine_row["pairs_per_s"]
        system["vs_naive"] = system["pairs_per_s"] / results["rows"]["a_naive_per_pair"]["pairs_per_s"]
        system["vs_model_card"] = system["pairs_per_s"] / results["rows"]["a2_naive_model_card_itm_itc"]["pairs_per_s"]
        results["system"] = system
        print(format_system(system), flush=True)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2))
    say(f"wrote {out}")
    return 0


def format_system(system: dict[str, Any]) -> str:
    """Render the system benchmark as text."""
    rss = system.get("worker_peak_rss_mib")
    return "\n".join([
        f"{'d_system_http_redis_celery':32} {system['pairs']:>5} {system['seconds']:>7.2f} "
        f"{system['pairs_per_s']:>8.3f} {system['vs_naive']:>8.2f} {system['vs_model_card']:>7.2f}   "
        f"system/engine = {system['vs_engine']:.2f} (best of {system['rounds']} rounds: "
        + ", ".join(f"{x:.3f}" for x in system["round_pairs_per_s"]) + " pairs/s)",
        f"worker ready {system['worker_ready_s']:.1f}s after spawn; cold start to first result "
        f"{system['cold_start_to_first_result_s']:.1f}s; worker peak RSS "
        + (f"{rss:.0f} MiB" if rss else "n/a"),
    ])
