"""docker-compose.yml validates against the Compose Specification, and is wired as documented.

There is no Docker engine (nor the compose v2 plugin) in CI. Debian's docker-compose 1.29 rejects
valid current files (top-level `name:`), so the check is the Compose Specification's own JSON
schema, the one `docker compose config` applies, as shipped by check-jsonschema (a PyPI package,
no download at test time). The wiring checks below cover what a schema cannot see.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import click
import pytest

# check-jsonschema's YAML loader; it resolves `<<: *anchor` merges like compose does.
from ruamel.yaml import YAML

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = ROOT / "docker-compose.yml"
APP_SERVICES = {"migrate", "worker", "beat", "webhooks", "simulator"}
SECRETS = ("POSTGRES_PASSWORD", "REDIS_PASSWORD", "LINQ_API_V3_API_KEY", "CARDSHARE_WEBHOOK_SECRETS")
# What each service may see (README, "Running in production"): the URLs carry the two passwords.
SECRETS_BY_SERVICE = {
    "postgres": {"POSTGRES_PASSWORD"},
    "redis": {"REDIS_PASSWORD"},
    "migrate": {"POSTGRES_PASSWORD", "REDIS_PASSWORD"},
    "worker": {"POSTGRES_PASSWORD", "REDIS_PASSWORD", "LINQ_API_V3_API_KEY"},
    "beat": {"POSTGRES_PASSWORD", "REDIS_PASSWORD"},
    "webhooks": {"POSTGRES_PASSWORD", "REDIS_PASSWORD", "CARDSHARE_WEBHOOK_SECRETS"},
    "simulator": set(),
}


def validate(path: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "check_jsonschema", "--builtin-schema", "vendor.compose-spec", str(path)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    doc = YAML(typ="safe").load(COMPOSE.read_text())
    assert isinstance(doc, dict)
    return doc


def test_compose_file_matches_the_compose_specification() -> None:
    done = validate(COMPOSE)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "validation done" in done.stdout


@pytest.mark.parametrize(
    ("before", "after", "complaint"),
    [
        ("interval: 30s", "intervall: 30s", "intervall"),
        ("{condition: service_healthy}", "{condition: service_happy}", "service_happy"),
        ("profiles: [sim]", "profiles: sim", "profiles"),
    ],
)
def test_the_validator_rejects_a_broken_file(tmp_path: Path, before: str, after: str, complaint: str) -> None:
    text = COMPOSE.read_text()
    assert before in text
    broken = tmp_path / "docker-compose.yml"
    broken.write_text(text.replace(before, after, 1))
    done = validate(broken)
    assert done.returncode != 0
    assert complaint in done.stdout + done.stderr


def test_services_and_their_roles(compose: dict[str, Any]) -> None:
    services = compose["services"]
    assert set(services) == {"postgres", "redis", *APP_SERVICES}
    for name in APP_SERVICES - {"simulator"}:
        svc = services[name]
        # Non-secret settings only: the secrets come one role at a time (below), never as a file.
        assert svc["env_file"] == [{"path": "cardshare.env", "required": False}], name
        assert svc["environment"]["REDIS_URL"].startswith("${REDIS_URL:-redis://:${REDIS_PASSWORD:?")
        assert "DATABASE_URL" in svc["environment"]
    # The simulator stands in for Linq: no settings file, no URLs, no secrets.
    assert not {"env_file", "environment"} & set(services["simulator"])
    # Only the simulator hides behind a profile.
    assert services["simulator"]["profiles"] == ["sim"]
    assert [n for n, s in services.items() if "profiles" in s] == ["simulator"]
    # Workers scale: no fixed name, no host port.
    worker = services["worker"]
    assert "container_name" not in worker
    assert "ports" not in worker
    assert worker["environment"]["CARDSHARE_METRICS_HOST"] == "0.0.0.0"
    assert "PROMETHEUS_MULTIPROC_DIR" in worker["environment"]
    # Exactly one beat.
    assert services["beat"]["deploy"]["replicas"] == 1
    assert services["webhooks"]["environment"]["CARDSHARE_WEBHOOK_HOST"] == "0.0.0.0"
    assert services["webhooks"]["command"] == ["webhooks"]
    assert services["migrate"]["command"] == ["db", "upgrade"]
    assert services["migrate"]["restart"] == "no"


def test_dependencies_wait_for_migrations_and_health(compose: dict[str, Any]) -> None:
    services = compose["services"]
    for name, svc in services.items():
        for target in svc.get("depends_on", {}):
            assert target in services, f"{name} depends on unknown {target}"
    for name in ("worker", "beat", "webhooks"):
        assert services[name]["depends_on"]["migrate"] == {"condition": "service_completed_successfully"}
    for name in ("worker", "beat"):
        assert services[name]["depends_on"]["redis"] == {"condition": "service_healthy"}
    assert services["migrate"]["depends_on"]["postgres"] == {"condition": "service_healthy"}


def test_healthchecks_call_real_commands(compose: dict[str, Any]) -> None:
    from worker.cli.main import cli

    services = compose["services"]
    for name in ("postgres", "redis", "worker", "beat", "webhooks"):
        assert "test" in services[name]["healthcheck"], name
    checks = {n: services[n]["healthcheck"]["test"] for n in ("worker", "beat", "webhooks")}
    assert checks == {
        "worker": ["CMD", "cardshare", "health"],
        "beat": ["CMD", "cardshare", "health", "--beat"],
        "webhooks": ["CMD", "cardshare", "health", "--webhooks"],
    }
    health = cli.get_command(click.Context(cli), "health")
    assert health is not None
    flags = {opt for param in health.params for opt in param.opts}
    assert {"--beat", "--webhooks"} <= flags
    for name in ("worker", "beat", "webhooks", "migrate", "simulator"):
        assert cli.get_command(click.Context(cli), services[name]["command"][0]) is not None, name


def test_every_interpolated_variable_has_a_default_or_an_example() -> None:
    text = COMPOSE.read_text()
    example = (ROOT / ".env.example").read_text()
    listed = set(re.findall(r"^#?\s*([A-Z0-9_]+)=", example, flags=re.MULTILINE))
    # A required value is listed without one: compose refuses to start until it is filled in.
    for name in SECRETS:
        assert re.search(rf"^{name}=$", example, flags=re.MULTILINE), name
    for name, default in re.findall(r"\$\{([A-Z0-9_]+)(:-)?", text):
        assert default or name in listed, f"${{{name}}} has no default and is not in .env.example"


def test_ports_match_the_defaults() -> None:
    from worker.config import Settings

    dockerfile = (ROOT / "Dockerfile").read_text()
    exposed = set(re.findall(r"^EXPOSE (.+)$", dockerfile, flags=re.MULTILINE)[0].split())
    assert exposed == {str(Settings().webhook_port), str(Settings().metrics_port)}
    assert f'expose: ["{Settings().metrics_port}"]' in COMPOSE.read_text()


# --------------------------------------------------------------------------- hardening


class Missing(Exception):
    """A `${NAME:?message}` whose NAME is empty: compose refuses to start."""


def interpolate(value: Any, env: Mapping[str, str]) -> Any:
    """Compose's interpolation (`$$`, `${X}`, `${X:-default}`, `${X:?error}`, nested) over a tree."""
    if isinstance(value, dict):
        return {k: interpolate(v, env) for k, v in value.items()}
    if isinstance(value, list):
        return [interpolate(v, env) for v in value]
    if not isinstance(value, str):
        return value
    out: list[str] = []
    i = 0
    while i < len(value):
        if value.startswith("$$", i):
            out.append("$")
            i += 2
        elif value.startswith("${", i):
            depth, j = 1, i + 2
            while depth:
                if value.startswith("${", j):
                    depth, j = depth + 1, j + 2
                    continue
                depth -= value[j] == "}"
                j += 1
            match = re.fullmatch(r"(\w+)(?::([-?])(.*))?", value[i + 2 : j - 1], flags=re.DOTALL)
            assert match, value
            name, op, arg = match.groups()
            if env.get(name):
                out.append(env[name])
            elif op == "-":
                out.append(interpolate(arg, env))
            elif op == "?":
                raise Missing(f"{name}: {interpolate(arg, env)}")
            i = j
        else:
            out.append(value[i])
            i += 1
    return "".join(out)


def filled(compose: dict[str, Any]) -> tuple[dict[str, str], dict[str, Any]]:
    env = {name: f"{name.lower()}-value" for name in SECRETS}
    return env, interpolate(compose, env)


@pytest.mark.parametrize("name", SECRETS)
def test_compose_refuses_to_start_without_each_secret(compose: dict[str, Any], name: str) -> None:
    env, _ = filled(compose)
    del env[name]
    with pytest.raises(Missing, match=name):
        interpolate(compose, env)
    # No default hides an empty one either.
    with pytest.raises(Missing, match=name):
        interpolate(compose, {**env, name: ""})
    assert not re.search(rf"\$\{{{name}:?-", COMPOSE.read_text()), f"{name} has a default"


def test_each_service_gets_only_the_secrets_it_needs(compose: dict[str, Any]) -> None:
    env, rendered = filled(compose)
    services = rendered["services"]
    for name, svc in services.items():
        files = [f if isinstance(f, str) else f["path"] for f in svc.get("env_file", [])]
        assert ".env" not in files, f"{name} would get every secret"
        seen = json.dumps([svc.get("environment", {}), svc.get("command", [])])
        got = {secret for secret in SECRETS if env[secret] in seen}
        assert got == SECRETS_BY_SERVICE[name], name


def test_redis_requires_the_password_every_role_connects_with(compose: dict[str, Any]) -> None:
    env, rendered = filled(compose)
    services = rendered["services"]
    redis = services["redis"]
    assert redis["environment"] == {"REDIS_PASSWORD": env["REDIS_PASSWORD"]}
    # The server reads it from its environment, not from a command line written here.
    command = " ".join(redis["command"])
    assert '--requirepass "$REDIS_PASSWORD"' in command
    assert command.startswith("sh -c exec docker-entrypoint.sh redis-server")
    assert "REDISCLI_AUTH" in redis["healthcheck"]["test"][1]
    assert "grep -q PONG" in redis["healthcheck"]["test"][1]
    for name in APP_SERVICES - {"simulator"}:
        url = services[name]["environment"]["REDIS_URL"]
        assert url == f"redis://:{env['REDIS_PASSWORD']}@redis:6379/0", name
        db = services[name]["environment"]["DATABASE_URL"]
        assert db == f"postgresql://cardshare:{env['POSTGRES_PASSWORD']}@postgres:5432/cardshare"
    assert services["postgres"]["environment"]["POSTGRES_PASSWORD"] == env["POSTGRES_PASSWORD"]


def _megabytes(size: str) -> float:
    number, unit = re.fullmatch(r"(\d+(?:\.\d+)?)([kmg]b?)", size.lower()).groups()  # type: ignore[union-attr]
    return float(number) * {"k": 1 / 1024, "m": 1, "g": 1024}[unit[0]]


def test_every_service_has_a_memory_limit(compose: dict[str, Any]) -> None:
    for name, svc in compose["services"].items():
        assert _megabytes(svc["deploy"]["resources"]["limits"]["memory"]) > 0, name
    redis = compose["services"]["redis"]
    maxmemory = re.search(r"--maxmemory (\w+)", " ".join(redis["command"]))
    assert maxmemory, "Redis needs a maxmemory under its container limit"
    assert _megabytes(maxmemory.group(1)) < _megabytes(redis["deploy"]["resources"]["limits"]["memory"])


def test_images_are_pinned_to_exact_versions(compose: dict[str, Any]) -> None:
    version = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
    images = {name: svc["image"] for name, svc in compose["services"].items()}
    for name in APP_SERVICES:
        assert images[name] == f"cardshare:{version}", name
    # PostgreSQL's versions are MAJOR.MINOR, Redis's MAJOR.MINOR.PATCH; the OS release too.
    assert re.fullmatch(r"postgres:\d+\.\d+-[a-z]+", images["postgres"]), images["postgres"]
    assert re.fullmatch(r"redis:\d+\.\d+\.\d+-[a-z]+", images["redis"]), images["redis"]
