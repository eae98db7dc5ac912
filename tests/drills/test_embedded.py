"""Drill 8 (issue 19): the embedded redis-server is SIGKILLed mid-run. Two workers and beat, all
started as `cardshare` commands on the embedded Redis, must resume by themselves: a watchdog in
each starts it again on the same port, and recovery re-enqueues what the empty Redis lost."""

from __future__ import annotations

import contextlib
import datetime as dt
import os
import signal
import time
from pathlib import Path

import pytest
import redis

from tests.support.drills import SHARE, Figures, check, day_counts, scaled, seed_chats, settle, sweep_now
from tests.support.procs import Procs, timeout_for, wait_until, worker_consuming
from tests.support.world import World
from worker.config import Settings
from worker.deps import Deps
from worker.embedded import EmbeddedRedis

pytestmark = pytest.mark.drill

# Each wait's limit, named once: the test waits with them and its timeout is sized from them.
REDIS_UP_S = 90
WORKERS_S = 60
QUARTER_S = 120
REDIS_BACK_S = 30
RESUME_S = 120
SETTLE_S = 300


def _pings(port: int) -> bool:
    try:
        return bool(redis.Redis(port=port, socket_timeout=0.5).ping())
    except redis.RedisError:
        return False


@pytest.mark.timeout(timeout_for(REDIS_UP_S, WORKERS_S, QUARTER_S, REDIS_BACK_S, RESUME_S, SETTLE_S))
def test_embedded_redis_killed_mid_run_comes_back_by_itself(
    world: World, deps: Deps, settings: Settings, tmp_path: Path, today: dt.date
) -> None:
    from worker.queue.app import app, configure

    n = scaled(1500, 3000)
    data = tmp_path / "data"
    # No REDIS_URL: every cardshare process finds (or starts) the embedded Redis under `data`.
    procs = Procs(settings.replace(redis_url=None, data_dir=data), tmp_path)
    server = EmbeddedRedis(data / "redis")
    line = world.line()
    chats = seed_chats(deps, world.sim, line, n)
    world.sim.add_faults([{"path": SHARE, "mode": "pass", "latency_ms": 40}])
    try:
        procs.cli("worker", "-c", "16", "-n", "emb-a@%h")
        wait_until(
            lambda: server.recorded_port() > 0 and _pings(server.recorded_port()), REDIS_UP_S, 0.2, "Redis up"
        )
        port = server.recorded_port()
        url = f"redis://127.0.0.1:{port}/0"
        settings = settings.replace(redis_url=url)
        configure(settings)
        d = Deps(settings, deps.sessions, deps.client, sleep=deps.sleep)
        procs.cli("worker", "-c", "16", "-n", "emb-b@%h")
        procs.cli("beat")
        wait_until(lambda: len(app.control.ping(timeout=0.5)) >= 2, WORKERS_S, 0.5, "both workers")
        worker_consuming(app)
        sweep_now(d)
        wait_until(
            lambda: day_counts(d, today, None).get("succeeded", 0) >= n // 4,
            QUARTER_S,
            0.05,
            "a quarter shared",
        )
        first_pid = server.pid()
        assert first_pid is not None
        os.kill(first_pid, signal.SIGKILL)
        killed = time.monotonic()
        back = wait_until(
            lambda: server.pid() not in (None, first_pid) and _pings(port), REDIS_BACK_S, 0.1, "Redis back"
        )
        before = day_counts(d, today, None).get("succeeded", 0)
        resumed = wait_until(
            lambda: day_counts(d, today, None).get("succeeded", 0) > before + 5,
            RESUME_S,
            0.2,
            "sharing to resume",
        )
        seconds = settle(d, today, chats, timeout=SETTLE_S)
        report = check(d, world.sim, today)
        fig = Figures("embedded redis-server SIGKILLed mid-run (no manual restart)")
        fig.add(
            chats=n,
            redis_back_after_s=round(back, 1),
            sharing_resumed_after_s=round(time.monotonic() - killed - seconds, 1),
            settled_after_kill_s=round(time.monotonic() - killed, 1),
            same_port=server.recorded_port() == port,
        )
        fig.add_check(report)
        fig.write()
        assert server.recorded_port() == port  # the same address every process already had
        assert resumed < 120
        assert report.missed == []
        assert report.duplicates == []
        assert report.succeeded == n
    finally:
        procs.stop_all()
        pid = server.pid()
        if pid:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
