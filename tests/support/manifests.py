"""The probes deploy/kubernetes gives each role, read from the manifests themselves, so tests run
exactly the commands and paths a cluster would."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

KUBERNETES = Path(__file__).resolve().parents[2] / "deploy" / "kubernetes"
ROLES = {"worker": "worker.yaml", "beat": "beat.yaml", "webhooks": "webhooks.yaml"}


@dataclass(frozen=True)
class Probes:
    """A role's probes: an exec command (argv) or an HTTP GET path each."""

    liveness: list[str] | str
    readiness: list[str] | str
    startup: list[str] | str


def _what(probe: dict[str, Any]) -> list[str] | str:
    if "exec" in probe:
        return [str(part) for part in probe["exec"]["command"]]
    return str(probe["httpGet"]["path"])


def probes(role: str) -> Probes:
    docs = [d for d in yaml.safe_load_all((KUBERNETES / ROLES[role]).read_text()) if d]
    (deployment,) = (d for d in docs if d["kind"] == "Deployment")
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    return Probes(
        liveness=_what(container["livenessProbe"]),
        readiness=_what(container["readinessProbe"]),
        startup=_what(container["startupProbe"]),
    )
