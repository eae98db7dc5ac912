"""Liveness that means progress: worker and beat heartbeats in Redis, and the probes reading them.

A worker's main process writes a record every few seconds (`cardshare:worker:<node>`): when it
last finished a task, how many messages it holds, and `progress_at`, the last time it either
finished a task or had nothing at all to do. `cardshare health` fails when messages wait (in the
queue, or held by that worker) and `progress_at` is older than CARDSHARE_HEALTH_STALL_MINUTES:
a worker that is alive but stuck (deadlocked, SIGSTOPped, cut off from the broker) fails it,
an idle one does not. Beat writes `cardshare:beat` the same way, with the time of each send.

Every timestamp is Redis's clock (TIME), so workers, beat and the reader on different machines
need not agree on the time.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import socket
import threading
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import redis

from worker.keys import BEAT_KEY, SHARE_QUEUE, WORKER_PREFIX
from worker.logs import event
from worker.ops.liveness import Verdict as Verdict
from worker.ops.liveness import ago as _ago
from worker.ops.liveness import pid_alive

log = logging.getLogger("cardshare.health")

HEARTBEAT_S = 5.0
# A vanished worker's record stays readable this long, so `status` can say when it was last seen.
RECORD_TTL_S = 3600
# Beat counts as gone after this many missed heartbeats.
MISSED_BEATS = 4


def redis_client(url: str) -> redis.Redis:
    # Short timeouts: a probe that hangs on a dead Redis is worse than one that says so.
    return redis.Redis.from_url(url, socket_timeout=3, socket_connect_timeout=3)


def redis_now(client: redis.Redis) -> float:
    seconds, micros = client.time()
    return float(seconds) + float(micros) / 1e6


def heartbeat_interval(stall_s: float) -> float:
    """Often enough that a stall is seen within a fraction of its limit; never more than 5 s."""
    return max(0.2, min(HEARTBEAT_S, stall_s / 4))


def this_host() -> str:
    return socket.gethostname()


# --------------------------------------------------------------------------- records


@dataclass(frozen=True)
class WorkerRecord:
    node: str
    host: str
    pid: int
    pool: str
    concurrency: int
    started_at: float
    heartbeat_at: float
    progress_at: float
    last_task_at: float | None
    completed: int
    reserved: int
    interval_s: float

    def dumps(self) -> str:
        return json.dumps(asdict(self), separators=(",", ":"))

    @classmethod
    def loads(cls, raw: bytes | str) -> WorkerRecord:
        return cls(**json.loads(raw))


@dataclass(frozen=True)
class BeatRecord:
    host: str
    pid: int
    started_at: float
    heartbeat_at: float
    interval_s: float
    sent: dict[str, float] = field(default_factory=dict)  # task name -> when beat last sent it

    def dumps(self) -> str:
        return json.dumps(asdict(self), separators=(",", ":"))

    @classmethod
    def loads(cls, raw: bytes | str) -> BeatRecord:
        return cls(**json.loads(raw))


def read_workers(client: redis.Redis) -> list[WorkerRecord]:
    keys = sorted(client.scan_iter(match=f"{WORKER_PREFIX}*", count=500))
    if not keys:
        return []
    out = []
    for raw in client.mget(keys):
        if raw is not None:
            with contextlib.suppress(ValueError, TypeError):
                out.append(WorkerRecord.loads(raw))
    return out


def read_beat(client: redis.Redis) -> BeatRecord | None:
    raw = client.get(BEAT_KEY)
    if raw is None:
        return None
    try:
        return BeatRecord.loads(raw)
    except (ValueError, TypeError):
        return None


def queue_ready(client: redis.Redis) -> int:
    return int(client.llen(SHARE_QUEUE))


# --------------------------------------------------------------------------- writers


class _Ticker:
    """A daemon thread calling `tick` every `interval_s` until stopped; Redis errors are logged once."""

    def __init__(self, name: str, interval_s: float, tick: Callable[[], object]) -> None:
        self.interval_s = interval_s
        self._tick = tick
        self._stop = threading.Event()
        self._failing = False
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive() and self._thread is not threading.current_thread():
            self._thread.join(self.interval_s + 5)

    def _run(self) -> None:
        while True:
            try:
                self._tick()
                if self._failing:
                    event(log, "heartbeat.restored", thread=self._thread.name)
                self._failing = False
            except (redis.RedisError, OSError) as exc:
                if not self._failing:
                    event(log, "heartbeat.failed", logging.WARNING, thread=self._thread.name, error=str(exc))
                self._failing = True
            if self._stop.wait(self.interval_s):
                return


class WorkerHeartbeat:
    """The worker main process's record. `counters()` gives (tasks completed, messages held)."""

    def __init__(
        self,
        client: redis.Redis,
        *,
        node: str,
        pool: str,
        concurrency: int,
        stall_s: float,
        counters: Callable[[], tuple[int, int]],
    ) -> None:
        self.client = client
        self.node = node
        self.pool = pool
        self.concurrency = concurrency
        self.counters = counters
        self.interval_s = heartbeat_interval(stall_s)
        self.started_at: float | None = None
        self.progress_at = 0.0
        self.last_task_at: float | None = None
        self.completed = 0
        self._ticker = _Ticker("cardshare-heartbeat", self.interval_s, self.beat)

    @property
    def key(self) -> str:
        return WORKER_PREFIX + self.node

    def start(self) -> None:
        self._ticker.start()

    def beat(self) -> WorkerRecord:
        now = redis_now(self.client)
        completed, reserved = self.counters()
        if self.started_at is None:
            self.started_at = self.progress_at = now
            self.completed = completed
        if completed > self.completed:
            self.last_task_at = self.progress_at = now
        elif reserved == 0 and queue_ready(self.client) == 0:
            self.progress_at = now  # idle with nothing waiting is not a stall
        self.completed = completed
        record = WorkerRecord(
            node=self.node,
            host=this_host(),
            pid=os.getpid(),
            pool=self.pool,
            concurrency=self.concurrency,
            started_at=self.started_at,
            heartbeat_at=now,
            progress_at=self.progress_at,
            last_task_at=self.last_task_at,
            completed=completed,
            reserved=reserved,
            interval_s=self.interval_s,
        )
        self.client.set(self.key, record.dumps(), ex=RECORD_TTL_S)
        return record

    def stop(self) -> None:
        """Warm shutdown: stop beating and remove the record (a stopped worker is not stuck)."""
        self._ticker.stop()
        with contextlib.suppress(redis.RedisError, OSError):
            self.client.delete(self.key)


class BeatHeartbeat:
    """Beat's record: alive every few seconds, and when it last sent each scheduled task."""

    def __init__(self, client: redis.Redis, interval_s: float = HEARTBEAT_S) -> None:
        self.client = client
        self.interval_s = interval_s
        self.started_at: float | None = None
        self._sent: dict[str, float] = {}
        self._pending: set[str] = set()
        self._lock = threading.Lock()
        self._ticker = _Ticker("cardshare-beat-heartbeat", interval_s, self.beat)

    def start(self) -> None:
        self._ticker.start()

    def note_sent(self, task: str) -> None:
        """Called from beat's publishing thread; stamped with Redis's clock on the next beat."""
        with self._lock:
            self._pending.add(task)

    def beat(self) -> BeatRecord:
        now = redis_now(self.client)
        if self.started_at is None:
            self.started_at = now
        with self._lock:
            for task in self._pending:
                self._sent[task] = now
            self._pending.clear()
            sent = dict(self._sent)
        record = BeatRecord(this_host(), os.getpid(), self.started_at, now, self.interval_s, sent)
        self.client.set(BEAT_KEY, record.dumps(), ex=RECORD_TTL_S)
        return record

    def stop(self) -> None:
        self._ticker.stop()


# --------------------------------------------------------------------------- probes


def assess_worker(record: WorkerRecord, *, ready: int, now: float, stall_s: float) -> Verdict:
    """Stalled: messages wait (queue, or held by this worker) and no progress for `stall_s`."""
    since = now - record.progress_at
    held = record.reserved
    if (ready > 0 or held > 0) and since > stall_s:
        return Verdict(
            False,
            f"{record.node}: stalled: no task finished for {_ago(since)} (limit {_ago(stall_s)}) "
            f"while {ready} messages wait in the queue and it holds {held}; "
            f"heartbeat {_ago(now - record.heartbeat_at)} ago",
        )
    last = "never" if record.last_task_at is None else f"{_ago(now - record.last_task_at)} ago"
    return Verdict(
        True,
        f"{record.node}: ok: last task finished {last}, {record.completed} done, "
        f"{ready} waiting, heartbeat {_ago(now - record.heartbeat_at)} ago",
    )


def probe_workers(
    client: redis.Redis,
    *,
    stall_s: float,
    node: str | None = None,
    host: str | None = None,
    fresh: bool = False,
) -> Verdict:
    """The worker healthcheck: `node`, or every live worker of this host. `fresh` (readiness):
    each one's record must also have been renewed within MISSED_BEATS heartbeats."""
    now = redis_now(client)
    records = read_workers(client)
    if node is not None:
        chosen = [r for r in records if r.node == node]
        if not chosen:
            return Verdict(False, f"no heartbeat from worker {node} in the last {_ago(RECORD_TTL_S)}")
    else:
        host = host or this_host()
        mine = [r for r in records if r.host == host]
        chosen = [r for r in mine if pid_alive(r.pid)]
        if not chosen:
            gone = f" ({len(mine)} record(s) of exited workers)" if mine else ""
            return Verdict(False, f"no live cardshare worker has reported from {host}{gone}")
    ready = queue_ready(client)
    verdicts = []
    for r in chosen:
        registered = _registered(r, now) if fresh else None
        if registered is not None and not registered.ok:
            verdicts.append(registered)
        else:
            verdicts.append(assess_worker(r, ready=ready, now=now, stall_s=stall_s))
    bad = [v for v in verdicts if not v.ok]
    return Verdict(not bad, "; ".join(v.line for v in (bad or verdicts)))


def _registered(record: WorkerRecord, now: float) -> Verdict:
    """Readiness: the record in Redis is being renewed (a frozen or broker-less worker's is not)."""
    age, limit = now - record.heartbeat_at, MISSED_BEATS * record.interval_s
    if age > limit:
        return Verdict(
            False, f"{record.node}: heartbeat in Redis {_ago(age)} old (limit {_ago(limit)}): not registered"
        )
    return Verdict(True, f"{record.node}: registered, heartbeat {_ago(age)} ago")


def assess_beat(record: BeatRecord | None, *, now: float) -> Verdict:
    if record is None:
        return Verdict(
            False, f"beat: no heartbeat in the last {_ago(RECORD_TTL_S)}; is `cardshare beat` running?"
        )
    age = now - record.heartbeat_at
    limit = MISSED_BEATS * record.interval_s
    sent = ", ".join(
        f"{t.removeprefix('cardshare.')} sent {_ago(now - at)} ago" for t, at in sorted(record.sent.items())
    )
    if age > limit:
        return Verdict(
            False, f"beat: heartbeat {_ago(age)} ago (limit {_ago(limit)}), pid {record.pid} on {record.host}"
        )
    return Verdict(
        True,
        f"beat: ok: heartbeat {_ago(age)} ago, pid {record.pid} on {record.host}"
        + (f"; {sent}" if sent else ""),
    )


def probe_beat(client: redis.Redis) -> Verdict:
    return assess_beat(read_beat(client), now=redis_now(client))


def probe_http(url: str, *, timeout_s: float = 3.0) -> Verdict:
    """The webhook receiver's healthcheck: its /healthz answers 200."""
    # Imported here: httpx is ~0.13 s of CPU of a ~0.4 s probe (measured on the 2-core box), and
    # only the receiver's probe needs it; worker and beat probes run every 30 s per container.
    import httpx

    try:
        response = httpx.get(url, timeout=timeout_s)
    except httpx.HTTPError as exc:
        return Verdict(False, f"{url}: {type(exc).__name__}: {exc}")
    if response.status_code != 200:
        return Verdict(False, f"{url}: HTTP {response.status_code}")
    return Verdict(True, f"{url}: ok")


def embedded_redis_url(data_dir: Path) -> str | None:
    """The URL of an embedded Redis another cardshare command started under `data_dir`, if any."""
    port_file = data_dir / "redis" / "redis.port"
    try:
        port = int(port_file.read_text().strip() or 0)
    except (OSError, ValueError):
        return None
    return f"redis://127.0.0.1:{port}/0" if port else None


@contextlib.contextmanager
def connected(url: str) -> Iterator[redis.Redis]:
    client = redis_client(url)
    try:
        yield client
    finally:
        client.close()


def as_dict(record: WorkerRecord | BeatRecord) -> dict[str, Any]:
    return asdict(record)
