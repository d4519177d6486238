"""``verifier demo``, the newcomer's main command, end to end on a tiny model."""

from __future__ import annotations

import re
import subprocess
import sys

import redis as redis_lib

from core.settings import Settings
from tests.helpers import verifier_env
from verifier.demo import SAMPLES


def test_demo_submits_the_photographs_and_prints_every_verdict(redis_url: str, s3_endpoint: str) -> None:
    # Given the demo pointed at this Redis and S3 server, with a random tiny model
    redis_lib.Redis.from_url(redis_url).flushdb()
    settings = Settings.from_env({}, redis_url=redis_url, s3_endpoint_url=s3_endpoint)
    proc = subprocess.run([sys.executable, "-m", "verifier", "demo", "--model", "random:tiny"],
                          env=verifier_env(settings), capture_output=True, text=True, timeout=300)
    # Then it exits 0 and prints one scored row per (photograph, caption)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    out = proc.stdout
    for name, _, captions in SAMPLES:
        for caption in captions:
            row = re.search(rf"^{name}\.jpg\s+{re.escape(caption[:36])}\s+([0-9.]+)\s+(-?[0-9.]+)\s+(MATCH|no match)$",
                            out, re.MULTILINE)
            assert row, f"no scored row for {name} / {caption!r} in:\n{out}"
            assert 0.0 <= float(row.group(1)) <= 1.0 and -1.0 <= float(row.group(2)) <= 1.0
    # And the missing photograph fails alone with its error code, and random weights are flagged
    assert re.search(r"^missing\.jpg\s+failed: .*image_not_found", out, re.MULTILINE), out
    assert "RANDOM WEIGHTS" in out
    # And the jobs went through the real store: five jobs, four succeeded and one failed
    statuses = re.findall(r"(MATCH|no match|failed:)", out)
    assert statuses.count("failed:") == 1 and len(statuses) == 9
