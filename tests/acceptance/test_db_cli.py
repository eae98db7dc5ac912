"""`cardshare db upgrade` and `db check` need PostgreSQL only: with DATABASE_URL set and REDIS_URL
not, no Redis is started or asked for (the Kubernetes migrate Job gets DATABASE_URL alone)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.acceptance


def run(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", "from worker.cli.main import main; main()", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_db_commands_run_without_redis(database_url: str, tmp_path: Path) -> None:
    data = tmp_path / "data"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CARDSHARE_", "LINQ_", "REDIS_"))}
    env |= {"DATABASE_URL": database_url, "CARDSHARE_DATA_DIR": str(data)}
    upgrade = run("db", "upgrade", env=env)
    assert upgrade.returncode == 0, upgrade.stderr
    assert "schema is current" in upgrade.stdout
    check = run("db", "check", env=env)
    assert check.returncode == 0, check.stderr
    assert not (data / "redis").exists()  # no embedded Redis was started for them


def test_the_database_url_can_come_from_a_file(database_url: str, tmp_path: Path) -> None:
    """As a Kubernetes or compose secret mounted as a file; the URL (and its password) is never
    printed."""
    secret = tmp_path / "database-url"
    secret.write_text(database_url + "\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CARDSHARE_", "LINQ_", "REDIS_"))}
    env |= {"DATABASE_URL_FILE": str(secret), "CARDSHARE_DATA_DIR": str(tmp_path / "data")}
    check = run("db", "check", env=env)
    assert check.returncode == 0, check.stderr
    both = run("db", "check", env=env | {"DATABASE_URL": database_url})
    assert both.returncode == 2
    assert both.stderr.strip() == "cardshare: DATABASE_URL_FILE and DATABASE_URL are both set: give one"
