"""Liveness from local state only: a heartbeat file per process under CARDSHARE_DATA_DIR/health.

A worker's (or beat's) main process rewrites a small JSON file every few seconds: its pid, tasks
finished, messages held, the last time it made progress, and the task that has run longest
against its hard time limit. `cardshare health --live` reads only these files, never Redis or
PostgreSQL: a liveness probe that fails during an outage of either would restart every worker
in a loop, and a restart cannot fix an outage (README, "Kubernetes"). It fails when

- the file is stale: the main process is frozen (SIGSTOP, a deadlock that holds the GIL) or gone;
- messages are held and no task finished for CARDSHARE_HEALTH_STALL_MINUTES (holding nothing is
  idle, not stuck: with Redis away a worker holds nothing and stays live);
- a task has run past its hard time limit (the threads pool cannot enforce one, so a thread
  stuck past it only shows here).

The clock is this host's: writer and reader share it. Nothing here imports Celery or Redis (the
probe runs every 30 s in every container).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

from worker.logs import event

log = logging.getLogger("cardshare.health")

HEALTH_DIR = "health"
# The file counts as stale after this many missed heartbeats (as beat's record in Redis).
MISSED_BEATS = 4
# A task may overrun its hard limit by this much before liveness calls it stuck: the prefork
# and gevent pools end it at the limit, a heartbeat can be a few seconds late.
OVERRUN_GRACE_S = 15.0


def directory(data_dir: Path) -> Path:
    return data_dir.resolve() / HEALTH_DIR


def _safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9@._-]", "_", name)[:200]


def path_for(data_dir: Path, kind: str, node: str) -> Path:
    return directory(data_dir) / f"{kind}-{_safe(node)}.json"


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)  # a SIGSTOPped process still exists: its stale file is what fails it
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


@dataclass(frozen=True)
class Overrun:
    """The active task furthest into its hard time limit: how long it has run, and its limit."""

    running_s: float
    limit_s: float


@dataclass(frozen=True)
class LocalRecord:
    kind: str  # "worker" or "beat"
    node: str
    host: str
    pid: int
    started_at: float
    heartbeat_at: float
    progress_at: float
    completed: int
    held: int
    interval_s: float
    connected: bool  # a worker: its consumer reached the broker at least once (worker_ready)
    longest_task_s: float | None = None
    longest_task_limit_s: float | None = None

    def dumps(self) -> str:
        return json.dumps(asdict(self), separators=(",", ":"))

    @classmethod
    def loads(cls, raw: str) -> LocalRecord:
        return cls(**json.loads(raw))


def write(path: Path, record: LocalRecord) -> None:
    """Atomically: a probe never reads half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(record.dumps())
    os.replace(tmp, path)


def read(data_dir: Path, kind: str) -> list[LocalRecord]:
    out = []
    for path in sorted(directory(data_dir).glob(f"{kind}-*.json")):
        with contextlib.suppress(OSError, ValueError, TypeError):
            out.append(LocalRecord.loads(path.read_text()))
    return out


class LocalHeartbeat:
    """The heartbeat file of this process, rewritten every `interval_s` by a daemon thread.

    `counters()` gives (tasks finished, messages held); `overrun()` the active task closest to
    (or past) its hard limit. A worker passes both; beat neither (it holds nothing).
    """

    def __init__(
        self,
        data_dir: Path,
        *,
        kind: str,
        node: str,
        interval_s: float,
        counters: Callable[[], tuple[int, int]] = lambda: (0, 0),
        overrun: Callable[[], Overrun | None] = lambda: None,
    ) -> None:
        self.path = path_for(data_dir, kind, node)
        self.kind = kind
        self.node = node
        self.interval_s = interval_s
        self.counters = counters
        self.overrun = overrun
        self.connected = False
        self.started_at = time.time()
        self.progress_at = self.started_at
        self.completed: int | None = None
        self._stop = threading.Event()
        self._failing = False
        self._thread = threading.Thread(target=self._run, name=f"cardshare-{kind}-livefile", daemon=True)

    def start(self) -> None:
        self._tick()  # the file exists as soon as the process does: the startup probe reads it
        self._thread.start()

    def beat(self) -> LocalRecord:
        now = time.time()
        completed, held = self.counters()
        if self.completed is None or completed > self.completed or held == 0:
            # A finished task is progress; holding nothing is idle, never stuck.
            self.progress_at = now
        self.completed = completed
        worst = self.overrun()
        record = LocalRecord(
            kind=self.kind,
            node=self.node,
            host=socket.gethostname(),
            pid=os.getpid(),
            started_at=self.started_at,
            heartbeat_at=now,
            progress_at=self.progress_at,
            completed=completed,
            held=held,
            interval_s=self.interval_s,
            connected=self.connected,
            longest_task_s=None if worst is None else round(worst.running_s, 3),
            longest_task_limit_s=None if worst is None else worst.limit_s,
        )
        write(self.path, record)
        return record

    def _tick(self) -> None:
        try:
            self.beat()
            self._failing = False
        except OSError as exc:  # an unwritable data directory: liveness fails, sharing goes on
            if not self._failing:
                event(log, "heartbeat.file_failed", logging.WARNING, path=str(self.path), error=str(exc))
            self._failing = True

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            self._tick()

    def stop(self) -> None:
        """A clean exit removes the file: a stopped process is not a stuck one."""
        self._stop.set()
        if self._thread.is_alive() and self._thread is not threading.current_thread():
            self._thread.join(self.interval_s + 5)
        with contextlib.suppress(OSError):
            self.path.unlink()


# --------------------------------------------------------------------------- the probe


@dataclass(frozen=True)
class Verdict:
    ok: bool
    line: str


def ago(seconds: float) -> str:
    seconds = max(0.0, seconds)
    if seconds < 120:
        return f"{seconds:.0f}s"
    if seconds < 7200:
        return f"{seconds / 60:.0f}m"
    return f"{seconds / 3600:.1f}h"


def assess(record: LocalRecord, *, now: float, stall_s: float) -> Verdict:
    """One process's liveness from its file alone."""
    who = f"{record.node} (pid {record.pid})"
    age = now - record.heartbeat_at
    limit = MISSED_BEATS * record.interval_s
    if age > limit:
        return Verdict(
            False,
            f"{who}: heartbeat file {ago(age)} old (limit {ago(limit)}): the process is frozen or stuck",
        )
    if record.held > 0 and now - record.progress_at > stall_s:
        return Verdict(
            False,
            f"{who}: stalled: holds {record.held} messages and finished no task for "
            f"{ago(now - record.progress_at)} (limit {ago(stall_s)})",
        )
    running, hard = record.longest_task_s, record.longest_task_limit_s
    if running is not None and hard is not None and running > hard + OVERRUN_GRACE_S:
        return Verdict(
            False, f"{who}: a task has run {ago(running)}, past its hard time limit of {ago(hard)}"
        )
    if record.kind == "beat":
        return Verdict(True, f"{who}: live: heartbeat {ago(age)} ago")
    return Verdict(
        True,
        f"{who}: live: heartbeat {ago(age)} ago, {record.completed} tasks finished, holding {record.held}"
        + ("" if record.connected else ", not connected to the broker yet"),
    )


def probe(data_dir: Path, *, kind: str, stall_s: float, node: str | None = None) -> Verdict:
    """`cardshare health --live`: every live process of `kind` with a file under `data_dir`."""
    records = [r for r in read(data_dir, kind) if node is None or r.node == node]
    where = directory(data_dir)
    if node is not None and not records:
        return Verdict(False, f"no heartbeat file of {kind} {node} under {where}")
    host = socket.gethostname()
    mine = [r for r in records if r.host == host]
    alive = [r for r in mine if pid_alive(r.pid)]
    if not alive:
        gone = f" ({len(mine)} file(s) of exited processes)" if mine else ""
        return Verdict(False, f"no live cardshare {kind} has a heartbeat file under {where}{gone}")
    now = time.time()
    verdicts = [assess(r, now=now, stall_s=stall_s) for r in alive]
    bad = [v for v in verdicts if not v.ok]
    return Verdict(not bad, "; ".join(v.line for v in (bad or verdicts)))
