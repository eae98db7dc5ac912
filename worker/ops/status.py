"""How a day is going, and a chat's whole story: plain dataclasses for the CLI, JSON and the page.

Nothing here writes: the database is read in a READ ONLY transaction, Redis only read. A Redis
that cannot be reached leaves the database's numbers intact and says so in `broker_error`.
"""

from __future__ import annotations

import datetime as dt
import uuid
from collections import Counter
from dataclasses import asdict, dataclass, field
from typing import Any

import redis
from sqlalchemy.orm import Session, sessionmaker

from worker.keys import SHARE_QUEUE, UNACKED_KEY
from worker.ops import health
from worker.rules import retention as retention_rules
from worker.rules.cadence import EXPLANATIONS, NotDue, Policy, share_day, why_not_due
from worker.rules.states import CLOSED_STATUSES, DayStatus
from worker.store.reports import (
    AttemptRow,
    AuditRow,
    ChatInfo,
    DayCount,
    DayRow,
    FailureRow,
    RunRow,
    chat_attempts,
    chat_audit,
    chat_days,
    chat_info,
    day_status_counts,
    last_runs,
    line_cards,
    recent_failures,
    unmarked_due_by_line,
)
from worker.store.session import read_only

FAILURES_SHOWN = 20
FAILURE_DAYS = 7  # how far back "last failures" looks


@dataclass
class Counts:
    """One line's (or every line's) chat-days of a day.

    due = every chat-day the day has considered due: marked by a sweep or a manual share
    (whatever became of it) plus `not_enqueued`, chats due now that no sweep has reached yet.
    """

    due: int = 0
    not_enqueued: int = 0
    shared: int = 0
    confirmed_by_rate_limit: int = 0
    skipped: Counter[str] = field(default_factory=Counter)
    failed: Counter[str] = field(default_factory=Counter)
    unknown: int = 0
    queued: int = 0
    claimed: int = 0
    retry: int = 0

    @property
    def in_flight(self) -> int:
        """Marked and not finished: waiting in the queue, being shared, or waiting to retry."""
        return self.queued + self.claimed + self.retry

    @property
    def skipped_total(self) -> int:
        return sum(self.skipped.values())

    @property
    def failed_total(self) -> int:
        return sum(self.failed.values())

    def add(self, row: DayCount) -> None:
        kind = row.kind or "unstated"
        self.due += row.count
        match row.status:
            case "succeeded":
                self.shared += row.count
                self.confirmed_by_rate_limit += row.confirmed
            case "skipped":
                self.skipped[kind] += row.count
            case "failed":
                self.failed[kind] += row.count
            case "unknown":
                self.unknown += row.count
            case "queued":
                self.queued += row.count
            case "claimed":
                self.claimed += row.count
            case "retry":
                self.retry += row.count

    def merge(self, other: Counts) -> None:
        for name in ("due", "not_enqueued", "shared", "confirmed_by_rate_limit", "unknown"):
            setattr(self, name, getattr(self, name) + getattr(other, name))
        for name in ("queued", "claimed", "retry"):
            setattr(self, name, getattr(self, name) + getattr(other, name))
        self.skipped.update(other.skipped)
        self.failed.update(other.failed)

    def as_dict(self) -> dict[str, Any]:
        return {
            "due": self.due,
            "not_enqueued": self.not_enqueued,
            "shared": self.shared,
            "confirmed_by_rate_limit": self.confirmed_by_rate_limit,
            "skipped": self.skipped_total,
            "skipped_by_reason": dict(sorted(self.skipped.items())),
            "failed": self.failed_total,
            "failed_by_reason": dict(sorted(self.failed.items())),
            "unknown": self.unknown,
            "in_flight": self.in_flight,
            "queued": self.queued,
            "claimed": self.claimed,
            "retry": self.retry,
        }


@dataclass
class LineStatus:
    line: str
    card_active: bool | None
    counts: Counts


@dataclass(frozen=True)
class Run:
    kind: str
    started_at: dt.datetime
    finished_at: dt.datetime | None
    seconds: float | None
    scanned: int
    enqueued: int
    error: str | None


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
class Status:
    day: dt.date
    at: dt.datetime
    lines: list[LineStatus]
    total: Counts
    last_sweep: Run | None
    queue_ready: int | None = None
    queue_unacked: int | None = None
    workers: list[WorkerSeen] = field(default_factory=list)
    beat: BeatSeen | None = None
    broker_error: str | None = None
    failures: list[FailureRow] = field(default_factory=list)
    # Set for a day older than CARDSHARE_RETENTION_DAYS: its rows are dropped (the status page).
    past_retention: str | None = None

    @property
    def live_workers(self) -> int:
        return sum(1 for w in self.workers if w.live)

    def as_dict(self) -> dict[str, Any]:
        def run(r: Run | None) -> dict[str, Any] | None:
            return None if r is None else {k: _plain(v) for k, v in asdict(r).items()}

        out: dict[str, Any] = {
            "day": self.day.isoformat(),
            "at": self.at.isoformat(),
            "total": self.total.as_dict(),
            "lines": [
                {"line": ln.line, "card_active": ln.card_active, **ln.counts.as_dict()} for ln in self.lines
            ],
            "last_sweep": run(self.last_sweep),
            "queue": {"ready": self.queue_ready, "unacked": self.queue_unacked},
            "workers_live": self.live_workers,
            "workers": [asdict(w) for w in self.workers],
            "beat": None if self.beat is None else asdict(self.beat),
            "broker_error": self.broker_error,
            "failures": [{k: _plain(v) for k, v in asdict(f).items()} for f in self.failures],
        }
        if self.past_retention is not None:
            out["past_retention"] = self.past_retention
        return out


def _plain(value: Any) -> Any:
    if isinstance(value, dt.datetime | dt.date):
        return value.isoformat()
    if isinstance(value, uuid.UUID):
        return str(value)
    return value


def _run(row: RunRow | None) -> Run | None:
    if row is None:
        return None
    seconds = (row.finished_at - row.started_at).total_seconds() if row.finished_at else None
    return Run(row.kind, row.started_at, row.finished_at, seconds, row.scanned, row.enqueued, row.error)


def collect(
    sessions: sessionmaker[Session],
    *,
    day: dt.date | None,
    now: dt.datetime,
    policy: Policy,
    redis_url: str | None,
    stall_s: float,
) -> Status:
    """Today's (or `day`'s) numbers per line and in total, the last passes, queue, workers, beat."""
    today = share_day(now, policy.zone)
    day = day or today
    with read_only(sessions) as s:
        rows = day_status_counts(s, day)
        pending = unmarked_due_by_line(s, day=day, now=now, policy=policy) if day == today else {}
        cards = line_cards(s)
        runs = last_runs(s)
        failures = recent_failures(s, since=day - dt.timedelta(days=FAILURE_DAYS), limit=FAILURES_SHOWN)
    per_line: dict[str, Counts] = {}
    for row in rows:
        per_line.setdefault(row.line_phone, Counts()).add(row)
    for line, n in pending.items():
        counts = per_line.setdefault(line, Counts())
        counts.not_enqueued += n
        counts.due += n
    total = Counts()
    lines = []
    for line in sorted(per_line):
        total.merge(per_line[line])
        lines.append(LineStatus(line, cards.get(line), per_line[line]))
    status = Status(
        day=day,
        at=now,
        lines=lines,
        total=total,
        last_sweep=_run(runs.get("sweep")),
        failures=failures,
    )
    if redis_url is None:
        status.broker_error = "no Redis URL"
        return status
    try:
        with health.connected(redis_url) as client:
            _broker_side(status, client, stall_s)
    except (redis.RedisError, OSError) as exc:
        status.broker_error = f"Redis unavailable: {exc}"
    return status


def _broker_side(status: Status, client: redis.Redis, stall_s: float) -> None:
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


# --------------------------------------------------------------------------- one chat's history


@dataclass
class History:
    chat: ChatInfo
    today: dt.date
    today_status: str | None
    why_not_today: str | None  # the rule that fails today, with its explanation; None when due
    due_today: bool
    days: list[DayRow]
    attempts: list[AttemptRow]
    audit: list[AuditRow]
    # The oldest day kept (CARDSHARE_RETENTION_DAYS), when the chat is older than it: the days
    # before it are gone, not missing.
    truncated_before: dt.date | None = None
    retention_days: int | None = None

    def attempts_of(self, day: dt.date) -> list[AttemptRow]:
        return [a for a in self.attempts if a.day == day]

    def as_dict(self) -> dict[str, Any]:
        return {
            "chat": {k: _plain(v) for k, v in asdict(self.chat).items()},
            "today": self.today.isoformat(),
            "today_status": self.today_status,
            "due_today": self.due_today,
            "why_not_today": self.why_not_today,
            "days": [
                {
                    **{k: _plain(v) for k, v in asdict(d).items()},
                    "attempts": [
                        {k: _plain(v) for k, v in asdict(a).items() if k != "day"}
                        for a in self.attempts_of(d.day)
                    ],
                }
                for d in self.days
            ],
            "audit": [{k: _plain(v) for k, v in asdict(a).items()} for a in self.audit],
            "retention_days": self.retention_days,
            "truncated_before": None if self.truncated_before is None else self.truncated_before.isoformat(),
        }


def history(
    sessions: sessionmaker[Session],
    chat_id: uuid.UUID,
    *,
    now: dt.datetime,
    policy: Policy,
    days: int | None,
    retention_days: int | None = None,
) -> History | None:
    """Every day and attempt of a chat (or the last `days` days), and why it is not due today.
    With `retention_days`, days past retention are left out (they are being dropped)."""
    today = share_day(now, policy.zone)
    since = None if days is None else today - dt.timedelta(days=days - 1)
    kept = None if retention_days is None else retention_rules.oldest_kept(today, retention_days)
    if kept is not None and (since is None or since < kept):
        since = kept
    with read_only(sessions) as s:
        chat = chat_info(s, chat_id)
        if chat is None:
            return None
        day_rows = chat_days(s, chat_id, since=since)
        attempts = chat_attempts(s, chat_id, since=since)
        audit = chat_audit(s, str(chat_id))
    today_row = next((d for d in day_rows if d.day == today), None)
    today_status = today_row.status if today_row else None
    why = why_not_due(
        chat.facts,
        now=now,
        policy=policy,
        shared_today=today_status == DayStatus.SUCCEEDED,
        day_closed=today_status in CLOSED_STATUSES,
    )
    # The chat is older than what is kept, and the days asked for reach past it.
    asked = None if days is None else today - dt.timedelta(days=days - 1)
    truncated = kept is not None and chat.created_at.astimezone(policy.zone).date() < kept
    truncated = truncated and (asked is None or (kept is not None and asked < kept))
    return History(
        chat=chat,
        today=today,
        today_status=today_status,
        why_not_today=None if why is None else explain_not_due(why, today_row),
        due_today=why is None,
        days=day_rows,
        attempts=attempts,
        audit=audit,
        truncated_before=kept if truncated else None,
        retention_days=retention_days,
    )


def explain_not_due(why: NotDue, today_row: DayRow | None) -> str:
    text = f"{why.value}: {EXPLANATIONS[why]}"
    if why is NotDue.DAY_CLOSED and today_row is not None and today_row.reason:
        text += f" ({today_row.status}: {today_row.reason})"
    return text
