"""The Kubernetes probes, run as the manifests give them, against real processes.

Liveness (`cardshare health --live`, `--beat --live`) reads only the heartbeat files under
CARDSHARE_DATA_DIR, so it stays healthy while Redis is away, where readiness (`--ready`) fails;
both pass again once Redis is back. A SIGSTOPped worker fails liveness. The receiver's
`/healthz` answers whatever PostgreSQL does; `/readyz` only while PostgreSQL answers.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy.orm import sessionmaker

from tests.support.manifests import probes
from tests.support.procs import Procs, timeout_for, wait_until
from tests.support.receiver import SECRET, ReceiverServer
from worker.config import Secret, Settings
from worker.deps import Deps
from worker.embedded import EmbeddedRedis, free_port
from worker.ingest.webhooks import create_app
from worker.store.engine import make_engine

pytestmark = pytest.mark.acceptance

# A 6-second stall limit: heartbeats every 1.5 s, a file is stale after 6 s.
FAST: dict[str, Any] = {"CARDSHARE_HEALTH_STALL_MINUTES": "0.1"}
STALE_S = 6.0
# The test's waits: every probe passing after the start, Redis away (longer than a stale file and
# a stall limit), every probe passing again after it is back, a frozen worker seen, and thawed.
UP_S = 90.0
DOWN_S = STALE_S + 4
BACK_S = 120.0
FROZEN_S = STALE_S + 10
THAWED_S = 30.0


def executable(argv: list[str]) -> list[str]:
    """The probe's argv with this venv's `cardshare` (what the image's PATH finds)."""
    assert argv[0] == "cardshare"
    installed = Path(sys.executable).with_name("cardshare")
    if installed.exists():
        return [str(installed), *argv[1:]]
    found = shutil.which("cardshare")
    assert found, "the cardshare console script is not installed"
    return [found, *argv[1:]]


def run(argv: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(executable(argv), env=env, capture_output=True, text=True, timeout=60, check=False)


def passes(argv: list[str], env: dict[str, str]) -> bool:
    return run(argv, env).returncode == 0


def passing(argv: list[str], env: dict[str, str]) -> Callable[[], bool]:
    return lambda: passes(argv, env)


def all_pass(commands: list[list[str]], env: dict[str, str], timeout: float, what: str) -> None:
    """Every command passes, each in turn, all within one `timeout`."""
    deadline = time.monotonic() + timeout
    for argv in commands:
        left = max(0.0, deadline - time.monotonic())
        wait_until(passing(argv, env), left, interval=0.5, what=f"{' '.join(argv)} {what}")


def exec_probes(role: str) -> tuple[list[str], list[str]]:
    """(liveness, readiness) commands of `role` in deploy/kubernetes; startup is liveness."""
    found = probes(role)
    assert isinstance(found.liveness, list)
    assert isinstance(found.readiness, list)
    assert found.startup == found.liveness
    return found.liveness, found.readiness


@pytest.fixture
def own_redis(tmp_path: Path) -> Iterator[EmbeddedRedis]:
    server = EmbeddedRedis(tmp_path / "redis")
    server.start()
    yield server
    server.stop()


@pytest.mark.timeout(timeout_for(UP_S, DOWN_S, BACK_S, FROZEN_S, THAWED_S))
def test_liveness_ignores_a_redis_outage_and_readiness_reports_it(
    settings: Settings, own_redis: EmbeddedRedis, tmp_path: Path
) -> None:
    from worker.queue.app import configure

    settings = settings.replace(redis_url=own_redis.url)
    configure(settings)
    worker_live, worker_ready = exec_probes("worker")
    beat_live, beat_ready = exec_probes("beat")
    live, ready = [worker_live, beat_live], [worker_ready, beat_ready]
    procs = Procs(settings, tmp_path)
    env = procs.env(**FAST)
    try:
        worker = procs.worker(concurrency=4, **FAST)
        procs.beat(**FAST)
        all_pass(live + ready, env, UP_S, "after the start")
        # PostgreSQL is a readiness dependency of workers (not of beat, which no longer uses it).
        dead_db = env | {"DATABASE_URL": f"postgresql://cardshare@127.0.0.1:{free_port()}/cardshare"}
        no_db = run(worker_ready, dead_db)
        assert no_db.returncode == 1, no_db.stdout
        assert "PostgreSQL does not answer" in no_db.stdout

        own_redis.stop()
        down_at = time.monotonic()
        seen: list[tuple[str, int, str]] = []
        # Longer than a stale file and a stall limit: liveness would have failed by now if it
        # depended on Redis.
        while time.monotonic() - down_at < DOWN_S:
            for argv in live + ready:
                done = run(argv, env)
                seen.append((" ".join(argv[2:]), done.returncode, done.stdout.strip()))
        for what, code, line in seen:
            if "--live" in what:
                assert code == 0, (what, line)
            else:
                assert code == 1, (what, line)
                assert "cannot reach Redis" in line, (what, line)
        assert worker.alive

        own_redis.start()
        all_pass(live + ready, env, BACK_S, "after Redis is back")

        # Alive but frozen: the process exists, its heartbeat file stops.
        os.kill(worker.pid, signal.SIGSTOP)
        try:
            wait_until(lambda: not passes(worker_live, env), FROZEN_S, interval=0.5, what="a frozen worker")
            frozen = run(worker_live, env)
            assert frozen.returncode == 1
            assert "the process is frozen or stuck" in frozen.stdout
            assert len(frozen.stdout.strip().splitlines()) == 1
        finally:
            os.kill(worker.pid, signal.SIGCONT)
        wait_until(passing(worker_live, env), THAWED_S, interval=0.5, what="live after SIGCONT")
    finally:
        procs.stop_all()


def test_the_receivers_liveness_touches_nothing_and_readiness_asks_postgresql(
    settings: Settings, deps: Deps
) -> None:
    paths = probes("webhooks")
    assert paths.liveness == paths.startup == "/healthz"
    assert paths.readiness == "/readyz"
    s = settings.replace(webhook_secrets=(Secret(SECRET),))
    dead = make_engine(f"postgresql+psycopg://cardshare@127.0.0.1:{free_port()}/cardshare", pool_size=1)
    try:
        for sessions, ready_status in ((deps.sessions, 200), (sessionmaker(dead), 503)):
            with ReceiverServer(create_app(s, sessions)) as receiver:
                base = receiver.url.removesuffix("/webhooks/linq")
                assert httpx.get(base + str(paths.liveness), timeout=5).status_code == 200
                answer = httpx.get(base + str(paths.readiness), timeout=5)
                assert answer.status_code == ready_status, answer.text
                # `cardshare health --webhooks --ready` asks the same path of this host's receiver.
                port = base.rsplit(":", 1)[1]
                env = {k: v for k, v in os.environ.items() if not k.startswith(("CARDSHARE_", "LINQ_"))} | {
                    "CARDSHARE_WEBHOOK_PORT": port
                }
                cli = run(["cardshare", "health", "--webhooks", "--ready"], env)
                assert cli.returncode == (0 if ready_status == 200 else 1), cli.stdout
                assert cli.stdout.startswith("healthy" if ready_status == 200 else "unhealthy: ")
    finally:
        dead.dispose()
