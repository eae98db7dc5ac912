"""Shared machinery for the fault drills: real celery worker and beat processes, bulk seeding,
waiting for a day to settle, the invariant check, and the figures each drill reports."""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil
from sqlalchemy import text

from worker.config import Settings
from worker.deps import Deps
from worker.ops.check import CheckReport, run_check
from worker.queue.publish import worker_command
from worker.rules.facts import ChatActivity
from worker.simulator import SimulatorAdmin
from worker.store.chats import record_activity
from worker.store.session import transaction

SCALE = os.environ.get("CARDSHARE_DRILL_SCALE", "small")
SHARE = "/share_contact_card$"


def scaled(small: int, full: int) -> int:
    return full if SCALE == "full" else small


def drill_timing(settings: Settings) -> Settings:
    """Short leases and intervals so recovery happens in seconds, in the production order."""
    return settings.replace(
        lease_s=10.0,
        recover_interval_s=3.0,
        sweep_interval_s=30.0,
        retry_budget_s=3.0,
        task_soft_time_limit_s=6.0,
        task_time_limit_s=8.0,
        http_read_timeout_s=1.5,
        http_connect_timeout_s=1.0,
        retry_base_s=0.1,
        retry_cap_s=1.0,
        db_pool_size=10,
    )


def wait_until(predicate: Callable[[], bool], timeout: float, interval: float = 0.1, what: str = "") -> float:
    """Seconds it took; AssertionError on timeout."""
    start = time.monotonic()
    while not predicate():
        if time.monotonic() - start > timeout:
            raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what or predicate}")
        time.sleep(interval)
    return time.monotonic() - start


@dataclass
class Proc:
    """A cardshare process with its log file; killed at teardown if still running."""

    argv: list[str]
    env: dict[str, str]
    log_path: Path
    popen: subprocess.Popen[bytes] | None = None

    def start(self) -> Proc:
        log = self.log_path.open("ab")
        self.popen = subprocess.Popen(
            self.argv, env=self.env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
        log.close()
        return self

    @property
    def pid(self) -> int:
        assert self.popen is not None
        return self.popen.pid

    @property
    def alive(self) -> bool:
        return self.popen is not None and self.popen.poll() is None

    def children(self) -> list[psutil.Process]:
        try:
            return psutil.Process(self.pid).children(recursive=False)
        except psutil.NoSuchProcess:
            return []

    def kill(self) -> None:
        """SIGKILL the process (not its children: a worker's sandbox exits on EOF by itself)."""
        if self.alive:
            os.kill(self.pid, signal.SIGKILL)
            assert self.popen is not None
            self.popen.wait(10)

    def stop(self, timeout: float = 20) -> None:
        if self.popen is None:
            return
        if self.alive:
            self.popen.send_signal(signal.SIGTERM)
            try:
                self.popen.wait(timeout)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait(5)
        # Take the session's stragglers (prefork children, sandboxes) with it.
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.pid, signal.SIGKILL)


@dataclass
class Procs:
    settings: Settings
    log_dir: Path
    started: list[Proc] = field(default_factory=list)

    def env(self, settings: Settings | None = None, **extra: str) -> dict[str, str]:
        s = settings or self.settings
        base = {k: v for k, v in os.environ.items() if not k.startswith(("CARDSHARE_", "LINQ_"))}
        return {**base, **s.to_env(), "CARDSHARE_LOG_FORMAT": "json", **extra}

    def worker(
        self,
        *,
        pool: str = "threads",
        concurrency: int = 32,
        settings: Settings | None = None,
        **extra: str,
    ) -> Proc:
        name = f"drill-{uuid.uuid4().hex[:6]}@%h"
        argv = worker_command(pool=pool, concurrency=concurrency, hostname=name)
        env = self.env(settings, CARDSHARE_WORKER_POOL=pool, **extra)
        proc = Proc(argv, env, self.log_dir / "worker.log").start()
        self.started.append(proc)
        return proc

    def beat(self, *, settings: Settings | None = None, tag: str = "", **extra: str) -> Proc:
        schedule = self.log_dir / f"beat-{tag}{uuid.uuid4().hex[:6]}.db"
        argv = [
            sys.executable,
            "-m",
            "celery",
            "-A",
            "worker.celery_app",
            "beat",
            "--schedule",
            str(schedule),
            "--loglevel",
            "INFO",
        ]
        proc = Proc(argv, self.env(settings, **extra), self.log_dir / f"beat{tag}.log").start()
        self.started.append(proc)
        return proc

    def cli(self, *args: str, settings: Settings | None = None) -> Proc:
        argv = [sys.executable, "-c", "from worker.cli.main import main; main()", *args]
        proc = Proc(argv, self.env(settings), self.log_dir / "cli.log").start()
        self.started.append(proc)
        return proc

    def stop_all(self) -> None:
        for proc in reversed(self.started):
            proc.stop(timeout=5)


def worker_consuming(app: Any, timeout: float = 30) -> float:
    """Wait until some worker answers a ping (it is connected and consuming)."""
    return wait_until(lambda: bool(app.control.ping(timeout=0.5)), timeout, interval=0.2, what="worker ping")


def seed_chats(deps: Deps, sim: SimulatorAdmin, line: str, n: int) -> list[uuid.UUID]:
    """n due iMessage chats on `line`, in the simulator and in PostgreSQL, in bulk."""
    when = dt.datetime.now(dt.UTC) - dt.timedelta(hours=1)
    ids = sorted(uuid.uuid4() for _ in range(n))
    sim.add_chats(
        [
            {
                "id": str(c),
                "line": line,
                "service": "iMessage",
                "messages": [{"is_from_me": True, "sent_at": when.isoformat()}],
            }
            for c in ids
        ]
    )
    with transaction(deps.sessions) as s:
        record_activity(
            s,
            [ChatActivity(c, line, service="iMessage", is_group=False, outbound_at=when) for c in ids],
        )
    return ids


def day_counts(deps: Deps, day: dt.date, chats: list[uuid.UUID] | None = None) -> dict[str, int]:
    with deps.sessions() as s:
        if chats is None:
            rows = s.execute(
                text("SELECT status, count(*) FROM share_days WHERE day = :d GROUP BY 1"), {"d": day}
            )
        else:
            rows = s.execute(
                text(
                    "SELECT status, count(*) FROM share_days WHERE day = :d AND chat_id = ANY(:c) GROUP BY 1"
                ),
                {"d": day, "c": chats},
            )
        return {str(k): int(v) for k, v in rows}


def settled(deps: Deps, day: dt.date, chats: list[uuid.UUID]) -> bool:
    counts = day_counts(deps, day, chats)
    final = counts.get("succeeded", 0) + counts.get("skipped", 0) + counts.get("failed", 0)
    return final == len(chats)


def settle(deps: Deps, day: dt.date, chats: list[uuid.UUID], timeout: float) -> float:
    return wait_until(
        lambda: settled(deps, day, chats),
        timeout,
        interval=0.25,
        what=f"{len(chats)} chat-days to finish (now {day_counts(deps, day, chats)})",
    )


def check(deps: Deps, sim: SimulatorAdmin, day: dt.date) -> CheckReport:
    with deps.sessions() as s:
        return run_check(s, day, deps.policy, now=dt.datetime.now(dt.UTC), share_events=sim.share_events())


def attempts_of(deps: Deps, day: dt.date) -> list[dict[str, Any]]:
    with deps.sessions() as s:
        return [
            dict(r._mapping)
            for r in s.execute(
                text(
                    "SELECT chat_id, claim_token, attempt_no, started_at, finished_at, outcome, http_status, "
                    "linq_code, retry_after_s FROM attempts WHERE day = :d ORDER BY chat_id, attempt_no"
                ),
                {"d": day},
            )
        ]


class Figures:
    """What a drill measured: printed, and appended to CARDSHARE_DRILL_REPORT when set."""

    def __init__(self, drill: str) -> None:
        self.drill = drill
        self.data: dict[str, Any] = {"drill": drill, "scale": SCALE}

    def add(self, **values: Any) -> None:
        self.data.update(values)

    def add_check(self, report: CheckReport) -> None:
        self.add(
            due=report.due,
            succeeded=report.succeeded,
            missed=len(report.missed),
            duplicates=len(report.duplicates),
            unknown=report.unknown,
            confirmed_by_rate_limit=report.confirmed_by_rate_limit,
            duplicate_explanations=[d.explanation for d in report.duplicates],
        )

    def write(self) -> None:
        line = json.dumps(self.data, default=str)
        print(f"\nDRILL {line}")
        target = os.environ.get("CARDSHARE_DRILL_REPORT")
        if target:
            with open(target, "a") as fh:
                fh.write(line + "\n")


class Supervisor:
    """Restarts a worker when it dies, like compose's restart policy; counts restarts."""

    def __init__(self, start: Callable[[], Proc]) -> None:
        self._start = start
        self.proc = start()
        self.restarts = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, daemon=True)
        self._thread.start()

    def _watch(self) -> None:
        while not self._stop.wait(0.2):
            if not self.proc.alive:
                self.restarts += 1
                self.proc = self._start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(5)


def iter_runs(attempts: list[dict[str, Any]]) -> Iterator[list[dict[str, Any]]]:
    """Attempts grouped by claim token: one group is one run of the task."""
    runs: dict[Any, list[dict[str, Any]]] = {}
    for a in attempts:
        runs.setdefault(a["claim_token"], []).append(a)
    yield from runs.values()


def sweep_now(deps: Deps) -> Any:
    """One real sweep from this process: card refresh, marking, publishing to Redis."""
    from worker.queue.app import app
    from worker.queue.publish import Publisher, queue_depth
    from worker.sharing.sweep import run_sweep
    from worker.store.engine import make_engine

    assert deps.settings.database_url
    engine = make_engine(deps.settings.database_url, pool_size=2)
    try:
        with Publisher(app) as publish:
            return run_sweep(deps, engine, publish, lambda: queue_depth(app), queue_lease_s=1800)
    finally:
        engine.dispose()
