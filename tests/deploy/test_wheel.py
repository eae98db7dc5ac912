"""The wheel is the product: it carries the Alembic migrations and finds them once installed.

Builds the sdist and, from it, the wheel (as `python -m build` does) from a copy of the source,
so the checkout gets no build/ or egg-info and a file left out of the sdist is caught too.
`scripts/check-wheel` goes further: a fresh venv, a real install, every command.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

import pytest
from alembic.script import ScriptDirectory

from tests.support.deploy_paths import ROOT, SOURCES


@pytest.fixture(scope="module")
def dist(tmp_path_factory: pytest.TempPathFactory) -> Path:
    src = tmp_path_factory.mktemp("src")
    for name in SOURCES:
        path = ROOT / name
        if path.is_dir():
            shutil.copytree(path, src / name, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        else:
            shutil.copy2(path, src / name)
    out = tmp_path_factory.mktemp("dist")
    # No isolation: the test extra brings setuptools and wheel, so no download at test time.
    done = subprocess.run(
        [sys.executable, "-m", "build", "--no-isolation", "--outdir", str(out), str(src)],
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return out


def only(dist: Path, pattern: str) -> Path:
    found = list(dist.glob(pattern))
    assert len(found) == 1, found
    return found[0]


def revisions() -> set[str]:
    return {p.name for p in (ROOT / "migrations" / "versions").glob("*.py")}


def test_the_wheel_carries_the_migrations_inside_the_package(dist: Path) -> None:
    names = set(zipfile.ZipFile(only(dist, "cardshare-*.whl")).namelist())
    shipped = {n.removeprefix("worker/_migrations/versions/") for n in names if "/versions/" in n}
    assert revisions() <= shipped
    assert {"worker/_migrations/env.py", "worker/_migrations/script.py.mako", "worker/py.typed"} <= names
    # Nothing at the top of site-packages but the package and its metadata.
    tops = {n.split("/")[0] for n in names} - {"worker"}
    assert len(tops) == 1
    assert tops.pop().endswith(".dist-info")
    assert not any(n.endswith("alembic.ini") for n in names)


def test_the_sdist_carries_what_the_wheel_is_built_from(dist: Path) -> None:
    with tarfile.open(only(dist, "cardshare-*.tar.gz")) as tar:
        names = {n.split("/", 1)[1] for n in tar.getnames() if "/" in n}
    assert {"setup.py", "pyproject.toml", "migrations/env.py", "migrations/script.py.mako"} <= names
    assert {f"migrations/versions/{r}" for r in revisions()} <= names


def test_the_installed_package_resolves_its_own_migrations(dist: Path, tmp_path: Path) -> None:
    """Unpacked like pip installs it, first on the path: the checkout's migrations/ is not used."""
    site = tmp_path / "site"
    zipfile.ZipFile(only(dist, "cardshare-*.whl")).extractall(site)  # noqa: S202 (our own build)
    probe = (
        "from alembic.script import ScriptDirectory\n"
        "from worker import migrate\n"
        "cfg = migrate.alembic_config('postgresql://unused/none')\n"
        "print(migrate.migrations_dir())\n"
        "print(ScriptDirectory.from_config(cfg).get_current_head())\n"
    )
    env = {**os.environ, "PYTHONPATH": str(site)}
    run = tmp_path / "elsewhere"
    run.mkdir()
    done = subprocess.run(
        [sys.executable, "-c", probe],
        cwd=run,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    where, head = done.stdout.split()
    assert Path(where) == site / "worker" / "_migrations"
    assert head == ScriptDirectory(str(ROOT / "migrations")).get_current_head()
