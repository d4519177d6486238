"""The docker-compose deployment and the Dockerfile, checked against what the code knows.

Docker cannot run here, so this reads the files: the services, their commands (each must parse
with the real ``verifier`` parser), their environments (each must build ``Settings``), the
model baked into the image, and, where Debian's docker-compose is installed, its validation.
"""

from __future__ import annotations

import argparse
import re
import shlex
import shutil
import socket
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest
import yaml
from standardwebhooks import Webhook

from core.names import VERIFY_QUEUE, WEBHOOK_QUEUE
from core.settings import ENV_NAMES, PREFIX, Settings
from core.workers import remove_worker, write_heartbeat
from verifier.cli import _parser
from verifier.worker_health import healthy_workers, run_worker_health

ROOT = Path(__file__).resolve().parent.parent
COMPOSE = ROOT / "docker-compose.yml"
DOCKERFILE = ROOT / "Dockerfile"
SERVICES = {"redis", "minio", "minio-init", "api", "worker-gpu", "worker-cpu", "webhooks"}
VERIFIER_SERVICES = ("api", "worker-gpu", "worker-cpu", "webhooks")
_VAR = re.compile(r"\$\$|\$\{([A-Za-z_][A-Za-z0-9_]*)(?:(:?[-?])([^}]*))?\}|\$([A-Za-z_][A-Za-z0-9_]*)")


def interpolate(value: str, environ: dict[str, str] | None = None) -> str:
    """Resolve compose's ``${VAR}``, ``${VAR:-default}``, ``${VAR-default}`` and ``$$`` as compose would."""
    environ = environ or {}

    def sub(m: re.Match[str]) -> str:
        if m.group(0) == "$$":
            return "$"
        name = m.group(1) or m.group(4)
        op, arg = m.group(2), m.group(3) or ""
        if op in (":?", "?"):
            if (name not in environ) or (op == ":?" and not environ[name]):
                raise AssertionError(f"${{{name}}} is required: {arg}")
            return environ[name]
        if op == ":-":
            return environ.get(name) or arg
        if op == "-":
            return environ.get(name, arg)
        return environ.get(name, "")

    return _VAR.sub(sub, value)


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    return yaml.safe_load(COMPOSE.read_text())


@pytest.fixture(scope="module")
def services(compose: dict[str, Any]) -> dict[str, Any]:
    return compose["services"]


def command(service: dict[str, Any]) -> list[str]:
    cmd = service["command"]
    return shlex.split(cmd) if isinstance(cmd, str) else [str(part) for part in cmd]


def environment(service: dict[str, Any]) -> dict[str, str]:
    """Return the service's environment after compose's interpolation with no outside variables."""
    env = service.get("environment") or {}
    if isinstance(env, list):
        env = dict(item.split("=", 1) for item in env)
    return {key: interpolate(str(value)) for key, value in env.items()}


def dockerfile_instructions() -> list[tuple[str, str]]:
    """Return the Dockerfile's (INSTRUCTION, arguments) with continuation lines joined."""
    joined = re.sub(r"\\\n", " ", DOCKERFILE.read_text())
    out = []
    for line in joined.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            word, _, rest = line.partition(" ")
            out.append((word.upper(), rest.strip()))
    return out


def dockerfile_args() -> dict[str, str]:
    args = {}
    for word, rest in dockerfile_instructions():
        if word == "ARG" and "=" in rest:
            name, _, default = rest.partition("=")
            args[name] = default
    return args


def dockerfile_env() -> dict[str, str]:
    env: dict[str, str] = {}
    for word, rest in dockerfile_instructions():
        if word == "ENV":
            for part in shlex.split(rest):
                name, _, value = part.partition("=")
                env[name] = value
    return env


def verifier_argv(argv: list[str]) -> list[str] | None:
    """Return the arguments after ``verifier`` when ``argv`` runs the verifier command."""
    if argv and argv[0] in ("CMD", "CMD-SHELL"):
        argv = argv[1:] if argv[0] == "CMD" else shlex.split(argv[1])
    if argv and argv[0] == "verifier":
        return argv[1:]
    return None


def parse(argv: list[str]) -> argparse.Namespace:
    try:
        return _parser().parse_args(argv)
    except SystemExit as exc:  # argparse exits on an unknown command or option
        raise AssertionError(f"`verifier {' '.join(argv)}` does not parse: exit {exc.code}") from None


# --- compose: services ------------------------------------------------------------------------
def test_services_present(services: dict[str, Any]) -> None:
    assert SERVICES <= set(services)
    assert services["worker-cpu"].get("profiles") == ["cpu"]
    # Everything else starts with a plain `docker compose up`.
    assert all(not services[name].get("profiles") for name in SERVICES - {"worker-cpu"})


def test_redis_append_only(services: dict[str, Any]) -> None:
    argv = command(services["redis"])
    assert argv[0] == "redis-server"
    assert argv[argv.index("--appendonly") + 1] == "yes"
    assert argv[argv.index("--appendfsync") + 1] == "everysec"
    assert any(str(v).endswith(":/data") for v in services["redis"]["volumes"])
    assert any(str(v).endswith(":/data") for v in services["minio"]["volumes"])


def test_minio_and_bucket(services: dict[str, Any]) -> None:
    assert command(services["minio"])[:2] == ["server", "/data"]
    init = services["minio-init"]
    assert init["depends_on"]["minio"]["condition"] == "service_healthy"
    assert "mc mb" in " ".join(command(init))
    for var in ("MINIO_ROOT_USER", "MINIO_ROOT_PASSWORD"):
        assert init["environment"][var] == services["minio"]["environment"][var]


def test_roles_and_queues(services: dict[str, Any]) -> None:
    api = parse(verifier_argv(command(services["api"])) or [])
    assert (api.command, api.host, api.port) == ("api", "0.0.0.0", 8000)
    assert any(str(p).endswith("8000:8000") for p in services["api"]["ports"])
    for name, queue in (("worker-gpu", VERIFY_QUEUE), ("worker-cpu", VERIFY_QUEUE), ("webhooks", WEBHOOK_QUEUE)):
        args = parse(verifier_argv(command(services[name])) or [])
        assert args.command == "worker", name
        assert args.queues.split(",") == [queue], name
    assert parse(verifier_argv(command(services["webhooks"])) or []).concurrency == 32


def test_gpu_reservation(services: dict[str, Any]) -> None:
    devices = services["worker-gpu"]["deploy"]["resources"]["reservations"]["devices"]
    assert devices == [{"driver": "nvidia", "count": 1, "capabilities": ["gpu"]}]
    for name in ("api", "worker-cpu", "webhooks"):
        assert "deploy" not in services[name], f"{name} reserves devices it does not need"


def test_healthchecks_and_lifecycle(services: dict[str, Any]) -> None:
    for name in ("redis", "minio", "api", "worker-gpu", "worker-cpu", "webhooks"):
        check = services[name].get("healthcheck")
        assert check and check.get("test"), f"{name} has no healthcheck"
    assert "redis-cli ping" in " ".join(services["redis"]["healthcheck"]["test"])
    assert "/healthz" in " ".join(services["api"]["healthcheck"]["test"])
    for name in VERIFIER_SERVICES:
        service = services[name]
        assert service["restart"] == "unless-stopped", name
        assert service["depends_on"]["redis"]["condition"] == "service_healthy", name
        assert "stop_grace_period" in service, name
    for name in ("worker-gpu", "worker-cpu"):
        grace = services[name]["stop_grace_period"]
        assert grace.endswith("s") and int(grace[:-1]) >= 60, f"{name}: too short for a batch to finish"


# --- compose: environment ---------------------------------------------------------------------
def test_environment_is_known_and_valid(services: dict[str, Any]) -> None:
    known = set(ENV_NAMES.values())
    for name, service in services.items():
        env = environment(service)
        unknown = {key for key in env if key.startswith(PREFIX) and key not in known}
        assert not unknown, f"{name}: unknown settings {sorted(unknown)}"
        if name not in VERIFIER_SERVICES:
            continue
        # The image sets VERIFIER_MODEL; compose adds the rest. Both must make valid settings.
        merged = {**{k: v for k, v in dockerfile_env().items() if k.startswith(PREFIX)}, **env}
        settings = Settings.from_env(merged)
        assert settings.redis_url == "redis://redis:6379/0", name
        assert settings.s3_endpoint_url == "http://minio:9000", name
        assert settings.webhook_secrets, f"{name}: no webhook secret"
        for secret in settings.webhook_secrets:
            Webhook(secret)  # a placeholder that standardwebhooks cannot decode would fail at start-up
        assert env["AWS_ACCESS_KEY_ID"] == interpolate(services["minio"]["environment"]["MINIO_ROOT_USER"])
        assert env["AWS_SECRET_ACCESS_KEY"] == interpolate(services["minio"]["environment"]["MINIO_ROOT_PASSWORD"])
    gpu = Settings.from_env(environment(services["worker-gpu"]))
    assert (gpu.device, gpu.dtype) == ("cuda", "bfloat16")
    assert Settings.from_env(environment(services["worker-cpu"])).device == "cpu"


def test_environment_override_is_checked(services: dict[str, Any]) -> None:
    """A secret given through the shell must still start with whsec_ (what the check above catches)."""
    raw = services["api"]["environment"][ENV_NAMES["webhook_secrets"]]
    env = {ENV_NAMES["webhook_secrets"]: interpolate(raw, {ENV_NAMES["webhook_secrets"]: "not-a-secret"})}
    with pytest.raises(ValueError, match="whsec_"):
        Settings.from_env(env)


def test_interpolate() -> None:
    assert interpolate("${A:-x}") == "x"
    assert interpolate("${A:-x}", {"A": ""}) == "x"
    assert interpolate("${A-x}", {"A": ""}) == ""
    assert interpolate("$${A} ${B}", {"B": "b"}) == "${A} b"


# --- the image --------------------------------------------------------------------------------
def test_dockerfile_bakes_the_model() -> None:
    instructions = dockerfile_instructions()
    args = dockerfile_args()
    assert instructions[0] == ("ARG", "PYTHON_IMAGE=python:3.11-slim")
    assert args["MODEL"] == "Salesforce/blip-itm-base-coco"
    assert "TORCH_SPEC" in args and "TORCH_INDEX_URL" in args
    saves = [rest for word, rest in instructions if word == "RUN" and "verifier model save" in rest]
    assert len(saves) == 1
    argv = shlex.split(saves[0].split("verifier model save", 1)[1].split("&&")[0])
    spec, directory = (interpolate(part, args) for part in argv[:2])
    assert spec == args["MODEL"]
    saved = parse(["model", "save", spec, directory])
    assert saved.directory == directory
    env = dockerfile_env()
    assert env["VERIFIER_MODEL"] == directory
    assert env["HF_HUB_OFFLINE"] == "1"
    assert all(key in ENV_NAMES.values() for key in env if key.startswith(PREFIX))
    users = [rest for word, rest in instructions if word == "USER"]
    assert users and users[-1] not in ("root", "0")
    ignored = (ROOT / ".dockerignore").read_text().split()
    assert {".venv", ".git", "artifacts", "bench-results"} <= set(ignored)


def test_every_verifier_command_parses(services: dict[str, Any]) -> None:
    used: list[list[str]] = []
    for service in services.values():
        for argv in (command(service) if "command" in service else [],
                     (service.get("healthcheck") or {}).get("test") or []):
            parsed = verifier_argv(argv)
            if parsed is not None:
                used.append(parsed)
    for word, rest in dockerfile_instructions():
        if word == "CMD" and rest.startswith("["):
            parsed = verifier_argv(yaml.safe_load(rest))
            if parsed is not None:
                used.append(parsed)
    commands = {tuple(argv[:1]) for argv in used}
    assert {("api",), ("worker",), ("worker-health",)} <= commands
    for argv in used:
        parse(argv)


# --- `verifier worker-health`, the workers' health check ------------------------------------
def test_healthy_workers_filters() -> None:
    now = time.time()
    base = {"alive": True, "host": "h1", "last_seen": now, "queues": ["verify"], "model_loaded": True, "name": "w"}
    pick = lambda ws, **kw: healthy_workers(ws, **{"host": "h1", "queues": ("verify",), "now": now,  # noqa: E731
                                                   "dead_after": 30, **kw})
    assert pick([base])
    assert not pick([dict(base, host="h2")])
    assert not pick([dict(base, alive=False)])
    assert not pick([dict(base, model_loaded=False)])
    assert not pick([dict(base, last_seen=now - 60)])
    assert not pick([dict(base, queues=["webhooks"])])
    assert pick([dict(base, queues=["webhooks"], model_loaded=False)], queues=("webhooks",))


def test_worker_health_reads_heartbeats(redis_url: str, redis_client: Any, capsys: pytest.CaptureFixture[str]) -> None:
    settings = Settings.from_env({ENV_NAMES["redis_url"]: redis_url})
    host = f"test-{socket.gethostname()}-{time.monotonic_ns()}"
    args = _parser().parse_args(["worker-health", "--queues", "verify", "--host", host])
    assert run_worker_health(settings, args) == 1
    name = f"{host}:1:abc"
    write_heartbeat(redis_client, name, {"host": host, "queues": ["verify"], "model_loaded": False}, ttl=30)
    try:
        assert run_worker_health(settings, args) == 1  # alive but not warm yet
        write_heartbeat(redis_client, name, {"host": host, "queues": ["verify"], "model_loaded": True}, ttl=30)
        assert run_worker_health(settings, args) == 0
        assert name in capsys.readouterr().out
    finally:
        remove_worker(redis_client, name)
    assert run_worker_health(settings, args) == 1
    down = Settings.from_env({ENV_NAMES["redis_url"]: "redis://127.0.0.1:1/0"})
    assert run_worker_health(down, args) == 1


# --- Debian's docker-compose (1.29): validates without an engine ----------------------------
@pytest.mark.skipif(shutil.which("docker-compose") is None, reason="docker-compose is not installed")
@pytest.mark.parametrize("extra", [[], ["--profile", "cpu"]], ids=["default", "cpu-profile"])
def test_docker_compose_config(extra: list[str]) -> None:
    result = subprocess.run(
        ["docker-compose", "-f", str(COMPOSE), *extra, "config", "-q"],
        cwd=ROOT, capture_output=True, text=True, timeout=60,
    )
    assert result.returncode == 0, result.stderr
