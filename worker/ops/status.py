"""How a day is going, and a chat's whole story: plain dataclasses for the CLI, JSON and the page.

Nothing here writes: the database is read in a READ ONLY transaction, Redis only read. A Redis
that cannot be reached leaves the database's numbers intact and says so in `broker_error`.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import uuid
from collections import Counter
from contextlib import AbstractContextManager
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

from worker.config import Settings
from worker.deps import pace_of, policy_of, utcnow
from worker.ops.day_counts import CountsReader, max_age_s, read_day_counts, saved_today
from worker.ops.lines import LineView
from worker.ops.lines import view as line_view
from worker.rules import retention as retention_rules
from worker.rules.cadence import EXPLANATIONS, NotDue, Policy, share_day
from worker.rules.gate import Decision, PacePolicy, Verdict, decide
from worker.rules.states import CLOSED_STATUSES, DayStatus
from worker.store.latency import DayLatency, first_outbound_latency
from worker.store.lines import LineRow, lines
from worker.store.plain import PlainDatabase
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
    last_runs,
    recent_failures,
)
from worker.store.sql import Reader
from worker.store.warnings import WarningRow, warnings

if TYPE_CHECKING:
    from sqlalchemy.orm import Session, sessionmaker

    from worker.ops.broker_view import BeatSeen, WorkerSeen


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
    held: Counter[str] = field(default_factory=Counter)  # by hold (line_paused, pace, ...)

    @property
    def in_flight(self) -> int:
        """Marked and not finished: waiting in the queue, being shared, or waiting to retry."""
        return self.queued + self.claimed + self.retry

    @property
    def held_total(self) -> int:
        return sum(self.held.values())

    @property
    def remaining(self) -> int:
        """Due today and not finished: what the line still has to share."""
        return self.in_flight + self.held_total + self.not_enqueued

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
            case "held":
                self.held[kind] += row.count

    def merge(self, other: Counts) -> None:
        for name in ("due", "not_enqueued", "shared", "confirmed_by_rate_limit", "unknown"):
            setattr(self, name, getattr(self, name) + getattr(other, name))
        for name in ("queued", "claimed", "retry"):
            setattr(self, name, getattr(self, name) + getattr(other, name))
        self.skipped.update(other.skipped)
        self.failed.update(other.failed)
        self.held.update(other.held)

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
            "held": self.held_total,
            "held_by_reason": dict(sorted(self.held.items())),
        }


@dataclass
class LineStatus:
    line: str
    card_active: bool | None
    counts: Counts
    view: LineView | None = None  # the line's state, pace and finish estimate (today only)


@dataclass(frozen=True)
class Run:
    kind: str
    started_at: dt.datetime
    finished_at: dt.datetime | None
    seconds: float | None
    scanned: int
    enqueued: int
    error: str | None


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
    account_paused: str | None = None
    warnings: list[WarningRow] = field(default_factory=list)
    # Set for a day older than CARDSHARE_RETENTION_DAYS: its rows are dropped (the status page).
    past_retention: str | None = None
    # When the chat-day counts were read, if earlier than `at` (the status page's CountsCache).
    counted_at: dt.datetime | None = None
    # First outbound -> share accepted, per day shown (docs/decisions.md §17).
    first_outbound: list[DayLatency] = field(default_factory=list)

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
                {
                    "line": ln.line,
                    "card_active": ln.card_active,
                    **ln.counts.as_dict(),
                    **({"state": ln.view.as_dict()} if ln.view else {}),
                }
                for ln in self.lines
            ],
            "account_paused": self.account_paused,
            "warnings": [{k: _plain(v) for k, v in asdict(w).items()} for w in self.warnings],
            "last_sweep": run(self.last_sweep),
            "queue": {"ready": self.queue_ready, "unacked": self.queue_unacked},
            "workers_live": self.live_workers,
            "workers": [asdict(w) for w in self.workers],
            "beat": None if self.beat is None else asdict(self.beat),
            "broker_error": self.broker_error,
            "failures": [{k: _plain(v) for k, v in asdict(f).items()} for f in self.failures],
            **({"counted_at": self.counted_at.isoformat()} if self.counted_at is not None else {}),
            "first_outbound_to_share": [
                {k: _plain(v) for k, v in asdict(d).items()} for d in self.first_outbound
            ],
        }
        if self.past_retention is not None:
            out["past_retention"] = self.past_retention
        return out


def first_outbound_line(lat: DayLatency) -> str:
    """`p50 1.2s, p99 4.8s over 1,234 shares` (docs/decisions.md §17)."""
    return f"p50 {lat.p50_s:.1f}s, p99 {lat.p99_s:.1f}s over {lat.shares:,} shares"


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


def reading(sessions: sessionmaker[Session] | PlainDatabase) -> AbstractContextManager[Reader]:
    """A read-only transaction: on the process's sessions, or on the plain connection of
    `cardshare status` and `history` (which skip SQLAlchemy: store/sql.py says why)."""
    if isinstance(sessions, PlainDatabase):
        return sessions.read_only()
    from worker.store.session import read_only  # SQLAlchemy's: loaded already by whoever made `sessions`

    return read_only(sessions)


def collect(
    sessions: sessionmaker[Session] | PlainDatabase,
    *,
    day: dt.date | None,
    now: dt.datetime,
    policy: Policy,
    redis_url: str | None,
    stall_s: float,
    pace: PacePolicy | None = None,
    counts_reader: CountsReader | None = None,
    summary_max_age_s: float = 0.0,
) -> Status:
    """Today's numbers per line (each in its own day) and in total, or `day`'s for every line;
    each line's state and pace; the last passes, queue, workers, beat and the open warnings.

    Today's chat-day counts come from beat's count pass when it counted these lines' days less
    than `summary_max_age_s` ago (`ops.day_counts`; 0: never); else from `counts_reader` (the
    status page's cache), else they are read now."""
    pace = pace or PacePolicy()
    today = share_day(now, policy.zone)
    latency: list[DayLatency] | None = None
    with reading(sessions) as s:
        line_rows = lines(s, policy.zone)
        todays = {r.state.phone: r.state.today(now) for r in line_rows}
        wanted = todays if day is None else {p: day for p in todays}
        current = {p: d for p, d in wanted.items() if d == todays[p]}
        saved = saved_today(s, current, now, summary_max_age_s) if wanted == current else None
        if saved is not None:
            (rows, pending), counted_at, latency = saved.counts, saved.counted_at, saved.latency
        elif counts_reader is None:
            (rows, pending), counted_at = read_day_counts(s, wanted, current, now, policy), now
        else:
            (rows, pending), counted_at = counts_reader(s, wanted, current, now, policy)
        runs = last_runs(s)
        since = (day or today) - dt.timedelta(days=FAILURE_DAYS)
        failures = recent_failures(s, since=since, limit=FAILURES_SHOWN)
        open_warnings = warnings(s)
    cards = {r.state.phone: r.card_active for r in line_rows}
    per_line: dict[str, Counts] = {}
    for row in rows:
        per_line.setdefault(row.line_phone, Counts()).add(row)
    for line, n in pending.items():
        counts = per_line.setdefault(line, Counts())
        counts.not_enqueued += n
        counts.due += n
    by_phone = {r.state.phone: r for r in line_rows}
    total = Counts()
    out = []
    for line in sorted(set(per_line) | {p for p, r in by_phone.items() if _shown(r, now)}):
        counts = per_line.setdefault(line, Counts())
        total.merge(counts)
        found = by_phone.get(line)
        v = None
        if found is not None and line in current:
            v = line_view(found, pace, now=now, day=current[line], remaining=counts.remaining)
        out.append(LineStatus(line, cards.get(line), counts, v))
    account = next((r.state.account_pause for r in line_rows if r.state.account_pause), None)
    status = Status(
        day=day or today,
        at=now,
        lines=out,
        total=total,
        last_sweep=_run(runs.get("sweep")),
        failures=failures,
        account_paused=account.describe() if account is not None and account.active(now) else None,
        warnings=open_warnings,
        counted_at=counted_at if counted_at < now else None,
    )
    if latency is None:
        with reading(sessions) as s:
            latency = first_outbound_latency(s, wanted.values())
    status.first_outbound = latency
    if redis_url is None:
        status.broker_error = "no Redis URL"
        return status
    # Only now, once the database has been read: redis-py costs 0.1-0.25 s to import on the 2-core
    # box (it brings OpenTelemetry's SDK when that is installed), which `status` would otherwise
    # spend before its first query (bench/README.md §6).
    from worker.ops.broker_view import read_broker

    seen = read_broker(
        redis_url, stall_s=stall_s, lines=[ln.line for ln in status.lines if ln.view is not None]
    )
    status.queue_ready, status.queue_unacked = seen.queue_ready, seen.queue_unacked
    status.workers, status.beat, status.broker_error = seen.workers, seen.beat, seen.error
    for ln in status.lines:
        if ln.view is not None and ln.line in seen.windows:
            ln.view = dataclasses.replace(ln.view, pace=seen.windows[ln.line])
    return status


def _shown(row: LineRow, now: dt.datetime) -> bool:
    """A line with no chat-days today still shows when an operator set something on it."""
    st = row.state
    return bool(
        (st.pause is not None and st.pause.active(now))
        or st.reputation in ("AT_RISK", "CRITICAL")
        or st.linq_status == "FLAGGED"
    )


# --------------------------------------------------------------------------- one chat's history


@dataclass
class History:
    chat: ChatInfo
    today: dt.date
    today_status: str | None
    why_not_today: str | None  # the rule that fails today (or the hold), with its explanation
    due_today: bool
    days: list[DayRow]
    attempts: list[AttemptRow]
    audit: list[AuditRow]
    # The oldest day kept (CARDSHARE_RETENTION_DAYS), when the chat is older than it: the days
    # before it are gone, not missing.
    truncated_before: dt.date | None = None
    retention_days: int | None = None
    held_today: str | None = None  # due, but the line is held: the hold, in words

    def attempts_of(self, day: dt.date) -> list[AttemptRow]:
        return [a for a in self.attempts if a.day == day]

    def as_dict(self) -> dict[str, Any]:
        return {
            "chat": {k: _plain(v) for k, v in asdict(self.chat).items()},
            "today": self.today.isoformat(),
            "today_status": self.today_status,
            "due_today": self.due_today,
            "why_not_today": self.why_not_today,
            "held_today": self.held_today,
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
    sessions: sessionmaker[Session] | PlainDatabase,
    chat_id: uuid.UUID,
    *,
    now: dt.datetime,
    policy: Policy,
    days: int | None,
    retention_days: int | None = None,
) -> History | None:
    """Every day and attempt of a chat (or the last `days` days), and why it is not due today
    (today is the chat's line's own day). With `retention_days`, days past retention are left out
    (they are being dropped)."""
    with reading(sessions) as s:
        found = chat_info(s, chat_id, default_zone=policy.zone)
        if found is None:
            return None
        chat, line = found
        today = line.today(now)
        asked = None if days is None else today - dt.timedelta(days=days - 1)
        since = asked
        kept = None if retention_days is None else retention_rules.oldest_kept(today, retention_days)
        if kept is not None and (since is None or since < kept):
            since = kept
        day_rows = chat_days(s, chat_id, since=since)
        attempts = chat_attempts(s, chat_id, since=since)
        audit = chat_audit(s, str(chat_id))
    today_row = next((d for d in day_rows if d.day == today), None)
    today_status = today_row.status if today_row else None
    decision: Decision = decide(
        chat.facts,
        line,
        now=now,
        policy=policy,
        shared_today=today_status == DayStatus.SUCCEEDED,
        day_closed=today_status in CLOSED_STATUSES,
    )
    why = decision.not_due
    held = None
    if decision.verdict is Verdict.HOLD and decision.held is not None:
        held = decision.held.text()
    elif today_status == DayStatus.HELD and today_row is not None:
        held = today_row.reason
    # The chat is older than what is kept, and the days asked for reach past it.
    truncated = kept is not None and chat.created_at.astimezone(line.zone).date() < kept
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
        held_today=held,
    )


def explain_not_due(why: NotDue, today_row: DayRow | None) -> str:
    text = f"{why.value}: {EXPLANATIONS[why]}"
    if why is NotDue.DAY_CLOSED and today_row is not None and today_row.reason:
        text += f" ({today_row.status}: {today_row.reason})"
    return text


def collect_for(
    sessions: sessionmaker[Session] | PlainDatabase,
    settings: Settings,
    day: dt.date | None,
    *,
    now: dt.datetime | None = None,
    counts_reader: CountsReader | None = None,
    live: bool = False,
) -> Status:
    """`status`, `line list` and the status page read the same numbers, from the same settings;
    `live`: count the day now even when beat's count pass saved it."""
    return collect(
        sessions,
        day=day,
        now=now or utcnow(),
        policy=policy_of(settings),
        redis_url=settings.redis_url,
        stall_s=settings.health_stall_minutes * 60,
        pace=pace_of(settings),
        counts_reader=counts_reader,
        summary_max_age_s=0.0 if live else max_age_s(settings.status_counts_interval_s),
    )
