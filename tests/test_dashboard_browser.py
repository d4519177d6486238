"""The ops dashboard in a real headless Chromium, against a real API and a real worker."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis as redis_lib
import requests

from core.keys import ALL_BUCKETS, KeyStore
from core.settings import Settings
from tests.api.test_metrics_api import clean_redis
from tests.helpers import free_port, wait_for
from tests.processes import Proc, running_api, running_worker, wait_job, worker_settings

CHROMIUM = Path("/usr/bin/chromium")
ARTIFACTS = Path("artifacts")
KEY_STORAGE = "caption-verifier.api-key"

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(not CHROMIUM.exists(), reason="Debian's chromium is not installed (.ci/install-browser.sh)"),
]
sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed (.ci/install-browser.sh)")


@pytest.fixture(scope="module")
def stack(redis_url: str, s3_endpoint: str) -> Iterator[tuple[Settings, str, str, Proc]]:
    """A worker and an API with auth on; yield settings, base URL, an operator key, the worker."""
    client = redis_lib.Redis.from_url(redis_url)
    clean_redis(client)
    client.delete("cv:workers", *client.scan_iter("cv:worker:*"))
    _, key = KeyStore(client).create("default", buckets=[ALL_BUCKETS], scopes=["operator"])
    settings = worker_settings(Settings.from_env(
        {}, redis_url=redis_url, s3_endpoint_url=s3_endpoint, model="random:tiny", batch_max_wait_ms=5,
        auth_enabled=True,
    ))
    with running_worker(settings, name="dashboard-worker") as worker, running_api(settings) as base:
        yield settings, base, key, worker


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    with sync_api.sync_playwright() as p:
        # --no-sandbox: CI runs as root in a container, where Chromium's sandbox cannot start.
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=["--no-sandbox"])
        yield browser
        browser.close()


def open_dashboard(browser: Any, base: str, key: str) -> tuple[Any, list[str]]:
    """Open /dashboard with ``key`` saved as a returning operator would have; collect console errors."""
    page = browser.new_page(viewport={"width": 1400, "height": 1100})
    errors: list[str] = []
    page.on("console", lambda msg: errors.append(msg.text) if msg.type == "error" else None)
    page.on("pageerror", lambda exc: errors.append(f"uncaught: {exc}"))
    page.add_init_script(f"window.localStorage.setItem({KEY_STORAGE!r}, {key!r});")
    page.goto(f"{base}/dashboard")
    return page, errors


def shown(page: Any, test_id: str) -> str:
    return str(page.get_by_test_id(test_id).inner_text()).strip()


def value(page: Any, test_id: str) -> str:
    return str(page.get_by_test_id(test_id).get_attribute("data-value"))


def test_dashboard_shows_what_the_api_says(stack, browser, put_image, bucket) -> None:  # type: ignore[no-untyped-def]
    _, base, key, worker = stack
    auth = {"Authorization": f"Bearer {key}"}
    # Given jobs that succeed and jobs that fail (missing objects, a broken image)
    bodies = [{"image": put_image(), "texts": ["a red square", "a cat"]} for _ in range(4)]
    bodies += [{"image": f"s3://{bucket}/missing-{i}.jpg", "text": "x"} for i in range(2)]
    bodies.append({"image": put_image(data=b"not an image"), "text": "x"})
    ids = [requests.post(f"{base}/v1/jobs", json=b, headers=auth, timeout=10).json()["id"] for b in bodies]
    docs = [wait_job(base, i, headers=auth) for i in ids]
    assert [d["status"] for d in docs] == ["succeeded"] * 4 + ["failed"] * 3

    # When an operator opens the dashboard
    page, errors = open_dashboard(browser, base, key)
    page.wait_for_selector('body[data-loaded="true"]', timeout=15_000)
    page.wait_for_function("document.querySelector('[data-testid=total-failed]').textContent === '3'", timeout=10_000)
    stats = requests.get(f"{base}/v1/stats", headers=auth, timeout=10).json()

    # Then every number on the page is the API's
    assert page.get_by_test_id("api-key").input_value() == key
    assert page.get_by_test_id("state").get_attribute("data-state") == "ok"
    assert page.get_by_test_id("banner").is_hidden()
    assert stats["totals"] == {"succeeded": 4, "failed": 3, "canceled": 0}
    for status, n in stats["totals"].items():
        assert shown(page, f"total-{status}") == str(n)
    for p in ("p50", "p95", "p99"):
        assert stats["latency"][p] is not None
        assert float(value(page, f"latency-{p}")) == pytest.approx(stats["latency"][p])
        assert shown(page, f"latency-{p}").endswith(("ms", "s"))
    assert shown(page, "latency-count") == str(stats["latency"]["count"]) == "4"
    assert shown(page, "depth-verify") == str(stats["queues"]["depths"]["verify"]) == "0"
    assert shown(page, "depth-webhooks") == str(stats["queues"]["depths"]["webhooks"])
    assert shown(page, "queued-jobs") == str(stats["queues"]["queued_jobs"])
    assert shown(page, "workers-warm") == str(stats["workers"]["warm"]) == "1"
    assert shown(page, "workers-alive") == str(stats["workers"]["alive"]) == "1"
    assert shown(page, "webhooks-failed") == str(stats["webhooks"]["failed"])

    # And the workers table, the failures by code with links to each job, and the chart
    rows = page.get_by_test_id("worker-row")
    assert rows.count() == len(stats["workers"]["list"]) == 1
    assert rows.first.get_attribute("data-warm") == "true"
    assert shown(page, "worker-device") == "cpu" and shown(page, "worker-dtype") == "float32"
    groups = {g["code"]: g for g in stats["failures"]}
    assert {c: g["count"] for c, g in groups.items()} == {"image_not_found": 2, "image_invalid": 1}
    for code, group in groups.items():
        assert shown(page, f"failure-count-{code}") == str(group["count"])
    hrefs = [a.get_attribute("href") for a in page.get_by_test_id("failure-link").all()]
    assert sorted(hrefs) == sorted(f"/v1/jobs/{j['id']}" for g in stats["failures"] for j in g["latest"])
    assert sorted(h.rsplit("/", 1)[1] for h in hrefs) == sorted(ids[4:])
    linked = requests.get(base + hrefs[0], headers=auth, timeout=10).json()
    assert linked["status"] == "failed" and linked["error"]["code"] in groups
    assert page.locator("#chart rect").count() >= 2
    assert page.locator("#chart polyline, #chart circle").count() >= 2

    # And a click on a failed job's link shows its document (fetched with the key)
    page.get_by_test_id("failure-link").first.click()
    page.get_by_test_id("job-dialog").wait_for(state="visible")
    assert '"status": "failed"' in page.locator("#job-json").inner_text()
    page.keyboard.press("Escape")
    page.evaluate("document.activeElement && document.activeElement.blur()")

    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "dashboard.png"), full_page=True)
    assert errors == []

    # When the only worker stops, the page says no worker is up
    worker.stop()
    page.wait_for_selector('[data-testid="state"][data-state="no_workers"]', timeout=15_000)
    assert page.get_by_test_id("banner").is_visible()
    assert "No worker" in shown(page, "banner")
    # (a worker that shut down cleanly deregisters; one that died shows as down for an hour)
    assert page.locator('[data-testid="worker-row"][data-alive="true"]').count() == 0
    page.screenshot(path=str(ARTIFACTS / "dashboard-no-workers.png"), full_page=True)
    assert errors == []
    page.close()


def test_dashboard_says_when_redis_is_down(stack, browser) -> None:  # type: ignore[no-untyped-def]
    settings, _, key, _ = stack
    down = dataclasses.replace(settings, redis_url=f"redis://127.0.0.1:{free_port()}/0")
    with running_api(down) as base:
        page, errors = open_dashboard(browser, base, key)
        banner = page.get_by_test_id("banner")
        banner.wait_for(state="visible", timeout=15_000)
        wait_for(lambda: banner.get_attribute("data-code") == "redis_unavailable", timeout=10, what="banner code")
        assert page.get_by_test_id("state").get_attribute("data-state") == "down"
        assert "Redis" in banner.inner_text()
        ARTIFACTS.mkdir(exist_ok=True)
        page.screenshot(path=str(ARTIFACTS / "dashboard-redis-down.png"), full_page=True)
        page.close()
    # The browser logs each 503 itself; nothing else may reach the console.
    assert [e for e in errors if "status of 503" not in e] == []
