"""Issue 19, point 8, for PostgreSQL (the drill in tests/drills/test_embedded.py does Redis under
real workers): a SIGKILLed embedded postmaster is started again by the watchdog on the same
socket, so a client keeping its URL reconnects and finds its data (docs/decisions.md §15)."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import psycopg
import pytest

from tests.support.procs import wait_until
from worker.embedded import EmbeddedServices, Watchdog


def _connects(url: str) -> bool:
    try:
        with psycopg.connect(url, connect_timeout=2) as conn:
            return conn.execute("SELECT count(*) FROM kept").fetchone() == (1,)
    except psycopg.Error:
        return False


def _pid(services: EmbeddedServices) -> int | None:
    assert services.postgres is not None
    try:
        return int((services.postgres.pgdata / "postmaster.pid").read_text().split()[0])
    except (FileNotFoundError, IndexError, ValueError):
        return None


@pytest.mark.timeout(300)
def test_a_killed_embedded_postgres_comes_back_on_the_same_address(tmp_path: Path) -> None:
    services = EmbeddedServices.start(tmp_path / "data", database=True, redis=False)
    watchdog: Watchdog | None = None
    try:
        assert services.postgres is not None
        url = services.postgres.url().replace("postgresql+psycopg://", "postgresql://")
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute("CREATE TABLE kept (id int)")
            conn.execute("INSERT INTO kept VALUES (1)")
        watchdog = Watchdog(services, interval_s=0.2).start()
        pid = _pid(services)
        assert pid is not None
        os.kill(pid, signal.SIGKILL)
        wait_until(lambda: _pid(services) not in (None, pid) and _connects(url), 120, 0.2, "PostgreSQL back")
    finally:
        if watchdog is not None:
            watchdog.stop()
        services.stop(only_ours=False)
