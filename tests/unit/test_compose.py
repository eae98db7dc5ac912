"""docker-compose.yml validates against the Compose Specification, and is wired as documented.

There is no Docker engine (nor the compose v2 plugin) in CI. Debian's docker-compose 1.29 rejects
valid current files (top-level `name:`), so the check is the Compose Specification's own JSON
schema, the one `docker compose config` applies, as shipped by check-jsonschema (a PyPI package,
no download at test time). The wiring checks below cover what a schema cannot see.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import click
import pytest

# check-jsonschema's YAML loader; it resolves `<<: *anchor` merges like compose does.
from ruamel.yaml import YAML

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = ROOT / "docker-compose.yml"
APP_SERVICES = {"migrate", "worker", "beat", "webhooks", "simulator"}


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
    for name in APP_SERVICES:
        svc = services[name]
        assert svc["env_file"] == [".env"], name
        assert svc["environment"]["REDIS_URL"].startswith("${REDIS_URL:-redis://redis:6379")
        assert "DATABASE_URL" in svc["environment"]
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
    for name, default in re.findall(r"\$\{([A-Z0-9_]+)(:-)?", text):
        assert default or name in listed, f"${{{name}}} has no default and is not in .env.example"


def test_ports_match_the_defaults() -> None:
    from worker.config import Settings

    dockerfile = (ROOT / "Dockerfile").read_text()
    exposed = set(re.findall(r"^EXPOSE (.+)$", dockerfile, flags=re.MULTILINE)[0].split())
    assert exposed == {str(Settings().webhook_port), str(Settings().metrics_port)}
    assert f'expose: ["{Settings().metrics_port}"]' in COMPOSE.read_text()
