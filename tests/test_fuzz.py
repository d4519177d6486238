"""Schemathesis against a live ``verifier api`` (gunicorn, real Redis) with a valid key.

Every operation in /openapi.json gets generated requests, valid and not; no response may
be a 5xx or break the document (status codes, bodies, headers, content types).
The API enqueues real Celery tasks: it runs on a Redis database of its own, emptied before
and after, so thousands of queued jobs never reach the workers of the other tests.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest
import redis as redis_lib
import schemathesis
from hypothesis import HealthCheck, Phase, given
from hypothesis import settings as hypothesis_settings
from hypothesis.errors import Unsatisfiable

from core.keys import KeyStore
from schemathesis import GenerationMode
from schemathesis.specs.openapi.checks import negative_data_rejection, positive_data_acceptance
from core.settings import Settings
from core.workers import write_heartbeat
from tests.processes import running_api

FUZZ_REDIS_URL = os.environ.get("VERIFIER_FUZZ_REDIS_URL", "redis://127.0.0.1:6379/11")
# The server checks more than JSON Schema can say (S3's bucket rules, control characters,
# metadata size, RFC 3339 deadlines, text XOR texts), so a schema-valid body may be refused
# (422) and a schema-invalid query may be read leniently; every other check stays on.
EXCLUDED_CHECKS = [positive_data_acceptance, negative_data_rejection]
MAX_EXAMPLES = int(os.environ.get("VERIFIER_FUZZ_EXAMPLES", "60"))

pytestmark = pytest.mark.fuzz


@pytest.fixture(scope="module")
def fuzz_api(redis_url: str) -> Iterator[tuple[str, str]]:
    """Run the API on its own Redis database; yield its URL and an all-bucket operator key."""
    client = redis_lib.Redis.from_url(FUZZ_REDIS_URL)
    client.flushdb()
    settings = Settings.from_env(
        {}, redis_url=FUZZ_REDIS_URL, rate_limit="100000/second", tenant_max_queued=1_000_000,
        webhook_allowlist=("127.0.0.0/8",),
    )
    _, key = KeyStore(client).create("fuzz", buckets=["*"], scopes=["operator"])
    # A warm worker's heartbeat, so /readyz answers 200 rather than its (documented) 503.
    write_heartbeat(client, "fuzz-worker", {"model_loaded": True}, ttl=600)
    try:
        with running_api(settings, workers=2) as base:
            yield base, key
    finally:
        client.flushdb()
        client.close()


def _fuzz_operation(operation, mode: GenerationMode, base: str, key: str) -> None:  # type: ignore[no-untyped-def]
    @given(case=operation.as_strategy(generation_mode=mode))
    @hypothesis_settings(
        max_examples=MAX_EXAMPLES, deadline=None, derandomize=True, database=None,
        phases=[Phase.explicit, Phase.generate], suppress_health_check=list(HealthCheck),
    )
    def run(case) -> None:  # type: ignore[no-untyped-def]
        case.call_and_validate(base_url=base, headers={"Authorization": f"Bearer {key}"},
                               excluded_checks=EXCLUDED_CHECKS)

    run()


@pytest.mark.parametrize("mode", [GenerationMode.POSITIVE, GenerationMode.NEGATIVE], ids=lambda m: m.value)
def test_api_conforms_to_its_contract(fuzz_api: tuple[str, str], mode: GenerationMode) -> None:
    # Given the document the live server publishes
    base, key = fuzz_api
    schema = schemathesis.openapi.from_url(f"{base}/openapi.json")
    failures: list[str] = []
    # When every operation gets generated requests, Then none breaks the contract
    for result in schema.get_all_operations():
        operation = result.ok()
        try:
            _fuzz_operation(operation, mode, base, key)
        except Unsatisfiable:
            assert mode is GenerationMode.NEGATIVE  # no input to get wrong (e.g. GET /healthz)
        except Exception as exc:  # noqa: BLE001 - collect every operation's failure, then report all
            failures.append(f"{operation.method.upper()} {operation.path}: {exc}")
    assert not failures, "\n\n".join(failures)
