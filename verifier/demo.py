"""``verifier demo``: start what is missing, submit real photographs with captions, print results."""

from __future__ import annotations

import io
import os
import sys
import time
from dataclasses import replace
from typing import Any

import requests

from core.settings import DEFAULT_MODEL, Settings
from verifier.stack import LocalStack, s3_bucket

# Real photographs that scikit-image ships, each with a true caption and a false one.
SAMPLES: list[tuple[str, str, list[str]]] = [
    ("chelsea", "a cat", ["a cat with stripes", "a red sports car on a race track"]),
    ("coffee", "a cup of coffee", ["a cup of coffee on a saucer", "two dogs playing in the snow"]),
    ("astronaut", "an astronaut", ["a woman astronaut in a space suit", "a bowl of fruit on a table"]),
    ("rocket", "a rocket", ["a rocket on a launch pad", "a cat sleeping on a sofa"]),
]
DEMO_BUCKET = "caption-verifier-demo"


def say(message: str) -> None:
    print(f"[demo] {message}", flush=True)


def choose_model(requested: str | None, settings: Settings) -> tuple[str, bool]:
    """Return the model spec to run and whether it has meaningful (trained) weights."""
    if requested:
        return requested, not requested.startswith("random:")
    if "VERIFIER_MODEL" in os.environ:
        return settings.model, not settings.model.startswith("random:")
    try:
        from huggingface_hub import hf_hub_download

        hf_hub_download(DEFAULT_MODEL, "config.json", etag_timeout=5)
        return DEFAULT_MODEL, True
    except Exception as exc:  # noqa: BLE001 - any failure means the hub model is out of reach
        banner = "!" * 78
        print(f"\n{banner}\n[demo] The Hugging Face hub cannot be reached ({type(exc).__name__}), so\n"
              f"[demo] {DEFAULT_MODEL} cannot be loaded. Running on random:base instead:\n"
              f"[demo] the real architecture with RANDOM weights. THE SCORES BELOW ARE MEANINGLESS;\n"
              f"[demo] they only show the pipeline working end to end.\n{banner}\n", flush=True)
        return "random:base", False


def sample_jpeg(name: str) -> bytes:
    """Return one of scikit-image's sample photographs as JPEG bytes."""
    import skimage.data
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(getattr(skimage.data, name)()).convert("RGB").save(buf, format="JPEG", quality=92)
    return buf.getvalue()


def upload_samples(endpoint: str | None, region: str) -> dict[str, str]:
    """Put the sample photographs in the demo bucket; return name → s3:// URI."""
    s3 = s3_bucket(endpoint, region, DEMO_BUCKET)
    uris = {}
    for name, _, _ in SAMPLES:
        s3.put_object(Bucket=DEMO_BUCKET, Key=f"samples/{name}.jpg", Body=sample_jpeg(name),
                      ContentType="image/jpeg")
        uris[name] = f"s3://{DEMO_BUCKET}/samples/{name}.jpg"
    return uris


def submit_and_wait(base: str, jobs: list[dict[str, Any]], headers: dict[str, str],
                    timeout: float = 900) -> list[dict[str, Any]]:
    """Submit jobs through the HTTP API and poll until each has a final status."""
    ids = []
    for body in jobs:
        resp = requests.post(f"{base}/v1/jobs", json=body, headers=headers, timeout=10)
        resp.raise_for_status()
        ids.append(resp.json()["id"])
    say(f"submitted {len(ids)} jobs; polling")
    deadline = time.monotonic() + timeout
    docs: dict[str, dict[str, Any]] = {}
    # Jobs finish roughly in the order they were queued: poll the oldest unfinished one, so a
    # light client (one request at a time) sees every result soon after it is written.
    while len(docs) < len(ids) and time.monotonic() < deadline:
        job_id = next(i for i in ids if i not in docs)
        resp = requests.get(f"{base}/v1/jobs/{job_id}", headers=headers, timeout=10)
        if resp.status_code == 429:  # over the key's request rate: wait as told
            time.sleep(float(resp.headers.get("Retry-After", "1")))
            continue
        resp.raise_for_status()
        doc = resp.json()
        if doc["status"] in ("succeeded", "failed", "canceled"):
            docs[job_id] = doc
        else:
            time.sleep(0.1)
    return [docs.get(i) or requests.get(f"{base}/v1/jobs/{i}", headers=headers, timeout=10).json() for i in ids]


def print_table(docs: list[dict[str, Any]], meaningful: bool) -> None:
    """Print one row per (image, caption) with its scores and verdict."""
    header = f"{'image':<13} {'caption':<36} {'P(match)':>8} {'cosine':>7}  verdict"
    print("\n" + header + "\n" + "-" * len(header))
    for doc in docs:
        image = doc["image"].rsplit("/", 1)[-1]
        if doc["status"] != "succeeded":
            print(f"{image:<13} {'':<36} {'':>8} {'':>7}  {doc['status']}: {doc.get('error')}")
            continue
        for s in doc["result"]["scores"]:
            verdict = "MATCH" if s["match"] else "no match"
            print(f"{image:<13} {s['text'][:36]:<36} {s['match_probability']:>8.3f} "
                  f"{s['cosine_similarity']:>7.3f}  {verdict}")
    model = docs[0].get("result", {}) or {}
    print(f"\nmodel: {model.get('model', {}).get('name', '?')}"
          + ("" if meaningful else "  (RANDOM WEIGHTS: scores are meaningless)"))


def run_demo(settings: Settings, *, model: str | None = None, keep_running: bool = False) -> int:
    """Run the demo; return the process exit status."""
    began = time.monotonic()
    spec, meaningful = choose_model(model, settings)
    stack = LocalStack(say=say)
    try:
        redis_url = stack.ensure_redis(settings.redis_url)
        endpoint = settings.s3_endpoint_url
        if endpoint is None:
            endpoint = stack.start_s3()  # a local S3-protocol server holds the demo's photographs
        run_settings = replace(settings, redis_url=redis_url, s3_endpoint_url=endpoint, model=spec)
        uris = upload_samples(endpoint, settings.s3_region)
        say(f"uploaded {len(uris)} photographs to s3://{DEMO_BUCKET}/samples/")
        headers = prepare_auth(run_settings)
        base = stack.start_api(run_settings)
        say(f"starting a worker with model {spec} (loading and warming it)…")
        stack.start_worker(run_settings)
        jobs = [{"image": uris[name], "texts": texts, "metadata": {"sample": name}} for name, _, texts in SAMPLES]
        jobs.append({"image": f"s3://{DEMO_BUCKET}/samples/missing.jpg", "text": "anything"})
        docs = submit_and_wait(base, jobs, headers)
        print_table(docs, meaningful)
        say(f"done in {time.monotonic() - began:.1f}s; logs in {stack.log_dir}")
        if keep_running:
            key = headers.get("Authorization", "").removeprefix("Bearer ")
            say(f"API at {base}, dashboard at {base}/dashboard" + (f", API key {key}" if key else "")
                + "; press Ctrl-C to stop")
            while True:
                time.sleep(3600)
        return 0
    except KeyboardInterrupt:
        return 130
    except Exception as exc:  # noqa: BLE001 - tell the newcomer what broke, then clean up
        say(f"failed: {exc} (logs in {stack.log_dir})")
        return 1
    finally:
        stack.close()


def prepare_auth(settings: Settings, bucket: str = DEMO_BUCKET) -> dict[str, str]:
    """Return request headers for a local run (an API key that may read ``bucket`` when auth is on)."""
    if not settings.auth_enabled:
        return {}
    from core.keys import create_key_for_demo

    return {"Authorization": f"Bearer {create_key_for_demo(settings, bucket=bucket)}"}


if __name__ == "__main__":
    sys.exit(run_demo(Settings.from_env()))
