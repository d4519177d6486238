"""Throughput and precision of the engine across dtypes and batch sizes (the GPU check).

``python -m worker.sweep --device cuda --dtypes float16,bfloat16 --batches 32,64,128,256``
runs the engine on ``batch`` distinct random images with one caption each, per dtype, and
reports pairs/s, achieved TFLOP/s against a same-dtype matmul measured in the run, and the
largest deviation from float32 on the same device. It needs only torch, transformers and
Pillow, so it runs on a GPU machine without the rest of the service installed.
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Sequence
from typing import Any

import torch

from worker.bench import CAPTIONS, model_flops
from worker.engine import Engine, EngineRequest
from worker.model import load_model

DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def matmul_tflops(device: torch.device, dtype: torch.dtype, *, size: int = 8192, seconds: float = 1.0) -> float:
    """Measure a square matmul's TFLOP/s in ``dtype`` on ``device``."""
    size = size if device.type == "cuda" else 1024
    a = torch.randn(size, size, device=device, dtype=dtype)
    b = torch.randn(size, size, device=device, dtype=dtype)
    for _ in range(3):
        a @ b
    _sync(device)
    reps, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        a @ b
        reps += 1
        if device.type == "cuda" and reps % 10 == 0:
            _sync(device)
    _sync(device)
    return 2.0 * size**3 * reps / (time.perf_counter() - start) / 1e12


def run_sweep(spec: str, *, device: str, dtypes: Sequence[str], batches: Sequence[int],
              repeats: int = 3) -> dict[str, Any]:
    """Run the sweep and return its rows (one per dtype and batch size)."""
    dev = torch.device(device)
    gen = torch.Generator().manual_seed(0)
    size = load_model(spec, device=device, dtype="float32").image_size
    largest = max(batches)
    pixels = [torch.randn(3, size, size, generator=gen) for _ in range(largest)]
    requests = [EngineRequest(f"img{i}", pixels[i], (CAPTIONS[i % len(CAPTIONS)],)) for i in range(largest)]
    reference: list[list[Any]] | None = None
    results: dict[str, Any] = {"model": spec, "device": str(dev), "rows": []}
    if dev.type == "cuda":
        results["gpu"] = torch.cuda.get_device_name(dev)
    for name in ["float32", *[d for d in dtypes if d != "float32"]]:
        loaded = load_model(spec, device=device, dtype=name)
        engine = Engine(loaded, vision_chunk=largest if dev.type == "cuda" else 1)
        engine.warmup()
        tokens = max(len(ids) for ids in loaded.tokenizer(list(CAPTIONS))["input_ids"])
        f = model_flops(loaded.model.config, tokens)
        per_pair = f["vision"] + f["cross_kv"] + f["text_itc"] + f["text_itm"]
        peak = matmul_tflops(dev, DTYPES[name])
        scores = engine.score(requests[: min(batches)])
        if name == "float32":
            reference = scores
        deviation = max(abs(a.match_probability - b.match_probability)
                        for ra, rb in zip(reference or scores, scores) for a, b in zip(ra, rb))
        for batch in batches if name in dtypes else []:
            best = float("inf")
            for _ in range(max(repeats, 1)):
                _sync(dev)
                start = time.perf_counter()
                engine.score(requests[:batch])
                _sync(dev)
                best = min(best, time.perf_counter() - start)
            tflops = batch * per_pair / best / 1e12
            results["rows"].append({
                "dtype": name, "batch": batch, "pairs_per_s": batch / best, "tflops": tflops,
                "matmul_tflops": peak, "pct_of_matmul": 100 * tflops / peak,
                "max_abs_diff_vs_float32": deviation,
            })
        del engine, loaded
        if dev.type == "cuda":
            torch.cuda.empty_cache()
    return results


def format_sweep(results: dict[str, Any]) -> str:
    """Render the sweep as a table."""
    lines = [f"model {results['model']} on {results.get('gpu', results['device'])}",
             f"{'dtype':9} {'batch':>5} {'pairs/s':>9} {'TFLOP/s':>8} {'matmul':>8} {'%mm':>5} {'|Δ| vs fp32':>11}"]
    for r in results["rows"]:
        lines.append(f"{r['dtype']:9} {r['batch']:>5} {r['pairs_per_s']:>9.1f} {r['tflops']:>8.2f} "
                     f"{r['matmul_tflops']:>8.1f} {r['pct_of_matmul']:>5.0f} {r['max_abs_diff_vs_float32']:>11.2e}")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> None:
    """Run the sweep from the command line."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="random:base")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--dtypes", default="float16,bfloat16")
    parser.add_argument("--batches", default="32,64,128,256")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--json", default=None)
    args = parser.parse_args(argv)
    results = run_sweep(args.model, device=args.device, dtypes=args.dtypes.split(","),
                        batches=[int(b) for b in args.batches.split(",")], repeats=args.repeats)
    print(format_sweep(results), flush=True)
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(results, fh, indent=2)


if __name__ == "__main__":
    main()
