"""``verifier bench`` end to end: the engine rows, then real jobs through HTTP, Redis and a worker."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import redis as redis_lib

from core.settings import Settings
from tests.helpers import verifier_env


def test_bench_command_runs_every_row_and_the_system_rounds(redis_url: str, s3_endpoint: str,
                                                            tmp_path: Path) -> None:
    # Given the bench command with a tiny model and small sizes, against this Redis and S3 server
    redis_lib.Redis.from_url(redis_url).flushdb()
    settings = Settings.from_env({}, redis_url=redis_url, s3_endpoint_url=s3_endpoint)
    out = tmp_path / "bench.json"
    proc = subprocess.run(
        [sys.executable, "-m", "verifier", "bench", "--model", "random:tiny", "--images", "2", "--texts", "2",
         "--naive-pairs", "1", "--system-jobs", "3", "--repeats", "2", "--no-variants", "--out", str(out)],
        env=verifier_env(settings), capture_output=True, text=True, timeout=300,
    )
    # Then it exits 0, prints every row and writes them as JSON
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    for row in ("a_naive_per_pair", "a2_naive_model_card_itm_itc", "b_engine_distinct_images",
                "c_engine_1_image_x_2_texts", "d_system_http_redis_celery"):
        assert row in proc.stdout
    results = json.loads(out.read_text())
    system = results["system"]
    # And the system row is the best of its rounds, each of which ran every job to success
    assert system["rounds"] == 2 and len(system["round_pairs_per_s"]) == 2
    assert system["pairs_per_s"] == max(system["round_pairs_per_s"])
    assert system["vs_engine"] == system["pairs_per_s"] / results["rows"]["b_engine_distinct_images"]["pairs_per_s"]
    assert system["cold_start_to_first_result_s"] >= system["worker_ready_s"] > 0
    assert system["worker_peak_rss_mib"] > 0
