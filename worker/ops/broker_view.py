"""What `status` shows of Redis: the share queue, the workers' and beat's heartbeats, each
line's pace window. Read after the database by `ops.status.collect`, the one place that imports
this module, so a command imports redis-py only once it reaches Redis."""

from __future__ import annotations

from dataclasses import dataclass, field

import redis

from worker.keys import SHARE_QUEUE, UNACKED_KEY
from worker.ops import health
from worker.ops.lines import LinePace
from worker.sharing.pace import RedisPacer
from worker.sharing.passes import QueueDepth


@dataclass(frozen=True)
class WorkerSeen:
    node: str
    host: str
    pid: int
    pool: str
    concurrency: int
    live: bool
    stalled: bool  # what `cardshare health` would say: work waits and it finished nothing for too long
    heartbeat_age_s: float
    last_task_age_s: float | None
    completed: int
    held: int


@dataclass(frozen=True)
class BeatSeen:
    host: str
    pid: int
    live: bool
    heartbeat_age_s: float
    sent_age_s: dict[str, float]


@dataclass
class BrokerView:
    queue_ready: int | None = None
    queue_unacked: int | None = None
    workers: list[WorkerSeen] = field(default_factory=list)
    beat: BeatSeen | None = None
    windows: dict[str, LinePace] = field(default_factory=dict)  # per line asked for, if Redis has one
    error: str | None = None  # Redis could not be reached: what was read before it stays


def read_broker(redis_url: str, *, stall_s: float, lines: list[str]) -> BrokerView:
    """The queue, the workers, beat, and the pace windows of `lines`."""
    view = BrokerView()
    try:
        with health.connected(redis_url) as client:
            _broker_side(view, client, stall_s)
            if lines:
                for line, w in RedisPacer(client).windows(lines).items():
                    view.windows[line] = LinePace(w.granted, w.scheduled_s)
    except (redis.RedisError, OSError) as exc:
        view.error = f"Redis unavailable: {exc}"
    return view


def _broker_side(status: BrokerView, client: redis.Redis, stall_s: float) -> None:
    redis_now = health.redis_now(client)
    status.queue_ready = int(client.llen(SHARE_QUEUE))
    status.queue_unacked = int(client.hlen(UNACKED_KEY))
    for r in health.read_workers(client):
        age = redis_now - r.heartbeat_at
        status.workers.append(
            WorkerSeen(
                node=r.node,
                host=r.host,
                pid=r.pid,
                pool=r.pool,
                concurrency=r.concurrency,
                # Missed three beats: gone, or too stuck to write (its record says when).
                live=age <= 3 * r.interval_s + 1.0,
                stalled=not health.assess_worker(
                    r, ready=status.queue_ready, now=redis_now, stall_s=stall_s
                ).ok,
                heartbeat_age_s=round(age, 1),
                last_task_age_s=None if r.last_task_at is None else round(redis_now - r.last_task_at, 1),
                completed=r.completed,
                held=r.reserved,
            )
        )
    beat = health.read_beat(client)
    if beat is not None:
        verdict = health.assess_beat(beat, now=redis_now)
        status.beat = BeatSeen(
            host=beat.host,
            pid=beat.pid,
            live=verdict.ok,
            heartbeat_age_s=round(redis_now - beat.heartbeat_at, 1),
            sent_age_s={t: round(redis_now - at, 1) for t, at in sorted(beat.sent.items())},
        )


def share_queue_depth(redis_url: str) -> QueueDepth:
    """The share queue's depth read with redis-py alone (`cardshare recover`), as
    `queue.publish.queue_depth` reads it through Celery's connection; Redis errors propagate."""
    with health.connected(redis_url) as client:
        return QueueDepth(ready=int(client.llen(SHARE_QUEUE)), unacked=int(client.hlen(UNACKED_KEY)))
