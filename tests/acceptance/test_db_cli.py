"""`cardshare db upgrade` and `db check` need PostgreSQL only: with DATABASE_URL set and REDIS_URL
not, no Redis is started or asked for (the Kubernetes migrate Job gets DATABASE_URL alone)."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from tests.support.procs import timeout_for
from tests.support.servers import Servers
from worker import migrate
from worker.embedded import free_port

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


def in_process(
    args: list[str],
    env: dict[str, str],
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> tuple[int, str]:
    """A `cardshare` command that fails before it starts a server or installs a runtime (a bad
    setting, `db wait`), through the real entry point without the cost of a subprocess: its exit
    code and stderr."""
    from worker.cli.main import main

    for name in list(os.environ):
        if name.startswith(("CARDSHARE_", "LINQ_", "REDIS_", "DATABASE_")):
            monkeypatch.delenv(name)
    for name, value in env.items():
        if name.startswith(("CARDSHARE_", "DATABASE_", "REDIS_")):
            monkeypatch.setenv(name, value)
    capsys.readouterr()
    with pytest.raises(SystemExit) as exited:
        main(args)
    code = exited.value.code
    return (code if isinstance(code, int) else 1), capsys.readouterr().err


def test_the_database_url_can_come_from_a_file(
    database_url: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """As a Kubernetes or compose secret mounted as a file; the URL (and its password) is never
    printed."""
    secret = tmp_path / "database-url"
    secret.write_text(database_url + "\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CARDSHARE_", "LINQ_", "REDIS_"))}
    env |= {"DATABASE_URL_FILE": str(secret), "CARDSHARE_DATA_DIR": str(tmp_path / "data")}
    check = run("db", "check", env=env)
    assert check.returncode == 0, check.stderr
    code, err = in_process(["db", "check"], env | {"DATABASE_URL": database_url}, monkeypatch, capsys)
    assert code == 2
    assert err.strip() == "cardshare: DATABASE_URL_FILE and DATABASE_URL are both set: give one"


@pytest.fixture
def empty_database(servers: Servers) -> Iterator[str]:
    """A database with no schema at all: the state before the migrate Job has run."""
    name = f"cs_empty_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(servers.admin_dsn, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    yield servers.url_for(name)
    with psycopg.connect(servers.admin_dsn, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


WAIT_S = 60.0


@pytest.mark.timeout(timeout_for(WAIT_S, 30))
def test_db_wait_holds_until_the_migration_has_run(
    empty_database: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """What the pods' init container does while the migrate Job runs."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CARDSHARE_", "LINQ_", "REDIS_"))}
    env |= {"DATABASE_URL": empty_database, "CARDSHARE_DATA_DIR": str(tmp_path / "data")}
    code, err = in_process(["db", "wait", "--timeout", "1"], env, monkeypatch, capsys)
    assert code != 0
    assert err.strip().endswith("run `cardshare db upgrade`"), err
    assert len(err.strip().splitlines()) == 1
    waiting = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "from worker.cli.main import main; main()",
            "db",
            "wait",
            "--timeout",
            str(WAIT_S),
        ],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert waiting.stderr is not None
        said = waiting.stderr.readline()  # it has found the schema missing and waits
        assert said.startswith("cardshare: waiting: database schema is at nothing"), said
        migrate.upgrade(empty_database)  # the migrate Job, while the init container waits
        out, err = waiting.communicate(timeout=WAIT_S + 10)
    finally:
        waiting.kill()
    assert waiting.returncode == 0, err
    assert out.startswith("schema is at ")
    dead = env | {"DATABASE_URL": f"postgresql://cardshare@127.0.0.1:{free_port()}/cardshare"}
    code, err = in_process(["db", "wait", "--timeout", "1"], dead, monkeypatch, capsys)
    assert code != 0
    assert "cannot reach PostgreSQL" in err


def test_status_and_history_refuse_a_database_they_cannot_read_in_one_line(
    empty_database: str,
    redis_url: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """The read-only commands' own connection (store.plain) refuses as every command does: the
    schema not migrated (exit 2), PostgreSQL not there (exit 3), one line naming it."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CARDSHARE_", "LINQ_", "REDIS_"))}
    data = tmp_path / "data"
    env |= {"DATABASE_URL": empty_database, "REDIS_URL": redis_url, "CARDSHARE_DATA_DIR": str(data)}
    chat = str(uuid.uuid4())
    for args in (["status"], ["status", "--json"], ["history", chat], ["check"]):
        code, err = in_process(args, env, monkeypatch, capsys)
        assert code == 2, (args, err)
        assert err.strip() == (
            f"cardshare: database schema is at nothing, this cardshare needs {migrate.head_revision()}: "
            "run `cardshare db upgrade`"
        ), err
    dead = env | {"DATABASE_URL": f"postgresql://cardshare@127.0.0.1:{free_port()}/cardshare"}
    for args in (["status"], ["history", chat], ["check"]):
        code, err = in_process(args, dead, monkeypatch, capsys)
        assert code == 3, (args, err)
        assert err.startswith("cardshare: cannot reach PostgreSQL: "), err
        assert len(err.strip().splitlines()) == 1, err
    assert not (data / "pg").exists()
    assert not (data / "redis").exists()
