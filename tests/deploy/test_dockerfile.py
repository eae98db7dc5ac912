"""The Dockerfile builds the image from the wheel, checked without a Docker engine.

Parsed statically: the final stage starts from a pinned slim Python, installs only the wheels
the build stage made (no source tree, no `-e`, no compiler), runs as a numeric non-root user
and has `cardshare` as its entrypoint. The build steps themselves are those of
scripts/check-wheel (sdist, wheel, locked versions), which CI runs for real.
"""

from __future__ import annotations

import json
import re
import shlex
from dataclasses import dataclass, field

import pytest
import yaml

from tests.support.deploy_paths import ROOT, SOURCES

COMPILERS = re.compile(r"\b(gcc|g\+\+|cc|clang|build-essential|make|cmake|[\w.+-]+-dev)\b")


@dataclass
class Stage:
    base: str
    name: str | None
    steps: list[tuple[str, str]] = field(default_factory=list)

    def all(self, instruction: str) -> list[str]:
        return [args for ins, args in self.steps if ins == instruction]


def parse(text: str) -> list[Stage]:
    """Instructions with their continuation lines joined, comments dropped, ARGs substituted."""
    lines: list[str] = []
    pending = ""
    for raw in text.splitlines():
        stripped = raw.strip()
        if not pending and (not stripped or stripped.startswith("#")):
            continue
        if stripped.endswith("\\"):
            pending += stripped[:-1] + " "
            continue
        lines.append(pending + stripped)
        pending = ""
    args: dict[str, str] = {}
    stages: list[Stage] = []
    for line in lines:
        instruction, _, rest = line.partition(" ")
        instruction = instruction.upper()
        if instruction == "ARG" and not stages:
            name, _, default = rest.partition("=")
            args[name] = default
        elif instruction == "FROM":
            words = re.sub(r"\$\{(\w+)\}", lambda m: args[m.group(1)], rest).split()
            stages.append(Stage(words[0], words[2] if len(words) == 3 and words[1].upper() == "AS" else None))
        else:
            stages[-1].steps.append((instruction, rest))
    return stages


@pytest.fixture(scope="module")
def stages() -> list[Stage]:
    return parse((ROOT / "Dockerfile").read_text())


def test_the_final_stage_is_a_pinned_slim_python(stages: list[Stage]) -> None:
    assert len(stages) >= 2, "multi-stage: a build stage and a runtime stage"
    final = stages[-1]
    assert re.fullmatch(r"python:3\.11\.\d+-slim-\w+", final.base), final.base
    # The build stage uses the same Python, so its wheels fit.
    assert {s.base for s in stages} == {final.base}


def test_the_build_stage_makes_the_wheel_with_the_locked_versions(stages: list[Stage]) -> None:
    build = next(s for s in stages if s.name == "build")
    copied = {word.rstrip("/") for args in build.all("COPY") for word in shlex.split(args)[:-1]}
    assert {*SOURCES, "constraints.txt"} <= copied
    env = " ".join(build.all("ENV"))
    assert "PIP_CONSTRAINT=/src/constraints.txt" in env
    run = " ".join(build.all("RUN"))
    assert "python -m build" in run
    assert "pip wheel --wheel-dir /wheels /dist/cardshare-*.whl" in run


def test_the_final_stage_installs_only_the_built_wheels(stages: list[Stage]) -> None:
    final = stages[-1]
    # Nothing from the build context: no source tree in the image.
    assert not final.all("COPY")
    assert not final.all("ADD")
    (install,) = [r for r in final.all("RUN") if "pip install" in r]
    assert "--mount=type=bind,from=build,source=/wheels,target=/wheels" in install
    pip = install[install.index("pip install") :].split("&&")[0].split()
    assert "--no-index" in pip
    assert "--find-links=/wheels" in pip
    assert pip[-1] == "/wheels/cardshare-*.whl"
    for run in final.all("RUN"):
        assert not re.search(r"(\s-e\s|--editable|pip install\s+\.(\s|$))", run), run
        if re.search(r"\b(apt-get|apt|apk)\b.*\binstall\b", run):
            assert not COMPILERS.search(run.split("install", 1)[1]), run


def test_the_image_runs_cardshare_as_a_numeric_non_root_user(stages: list[Stage]) -> None:
    final = stages[-1]
    (user,) = final.all("USER")
    uid, _, gid = user.partition(":")
    assert uid.isdigit()
    assert int(uid) > 0
    assert gid.isdigit()
    assert int(gid) > 0
    (entrypoint,) = final.all("ENTRYPOINT")
    assert json.loads(entrypoint) == ["cardshare"]
    # The same uid the Kubernetes pods declare (runAsNonRoot needs it numeric in the image).
    for path in (ROOT / "deploy" / "kubernetes").glob("*.yaml"):
        for doc in yaml.safe_load_all(path.read_text()):
            pod = (doc or {}).get("spec", {}).get("template", {}).get("spec")
            if pod:
                assert pod["securityContext"]["runAsUser"] == int(uid), path.name
                assert pod["securityContext"]["runAsGroup"] == int(gid), path.name


def test_the_build_context_is_only_what_the_build_stage_copies() -> None:
    rules = [
        line.strip()
        for line in (ROOT / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    assert rules[0] == "*"
    allowed = {rule[1:].rstrip("/") for rule in rules if rule.startswith("!")}
    assert allowed == {*SOURCES, "constraints.txt"}


def test_the_parser_sees_what_a_broken_dockerfile_does(stages: list[Stage]) -> None:
    text = (ROOT / "Dockerfile").read_text()
    editable = parse(text.replace("--find-links=/wheels /wheels/cardshare-*.whl", "-e /src", 1))
    with pytest.raises(AssertionError):
        test_the_final_stage_installs_only_the_built_wheels(editable)
    root = parse(text.replace("USER 10001:10001", "USER root", 1))
    with pytest.raises(AssertionError):
        test_the_image_runs_cardshare_as_a_numeric_non_root_user(root)
    compilers = parse(text.replace("useradd", "apt-get install -y gcc libpq-dev && useradd", 1))
    with pytest.raises(AssertionError):
        test_the_final_stage_installs_only_the_built_wheels(compilers)
    source = parse(text + "COPY worker /app/worker\n")
    with pytest.raises(AssertionError):
        test_the_final_stage_installs_only_the_built_wheels(source)
