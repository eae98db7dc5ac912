"""cardshare as real processes: celery workers, beat and the CLI as subprocesses with their logs,
killed at teardown; waiting for a condition."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil

from worker.config import Settings
from worker.queue.publish import worker_command

# What a test spends besides its own waits (servers, processes, seeding, teardown) on a loaded box,
# and the margin over the sum: a test's waits must run out, with their own message, before its
# pytest timeout does (`timeout_for`).
SETUP_S = 60.0
MARGIN = 1.25
# How long `worker_consuming` waits by default.
CONSUMING_S = 30.0


def timeout_for(*waits: float, setup: float = SETUP_S) -> int:
    """A pytest timeout for a test whose waits (each a `wait_until` timeout, a sleep, an outage)
    add up to `sum(waits)`: `@pytest.mark.timeout(timeout_for(...))`, from the same constants
    the test waits with, so a slow wait fails with its own message and figures."""
    return int((sum(waits) + setup) * MARGIN)


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

    def env(self, settings: Settings | None = None, /, **extra: str) -> dict[str, str]:
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


def worker_consuming(app: Any, timeout: float = CONSUMING_S) -> float:
    """Wait until some worker answers a ping (it is connected and consuming)."""
    return wait_until(lambda: bool(app.control.ping(timeout=0.5)), timeout, interval=0.2, what="worker ping")
