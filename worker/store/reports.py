"""Read-only queries: `cardshare status`, `history`, `check`, the status page and the demo.

Nothing here writes. `status` and the page read inside `session.read_only`. `check` judges the
chats no sweep reached with the Python rule (`rules.cadence`); `store.due` only narrows them to
the ones the SQL rule calls due (docs/decisions.md §2). Every statement for a day names that day
so PostgreSQL opens its partitions only (docs/retention.md §7).
"""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any
from zoneinfo import ZoneInfo

from worker.rules.cadence import Policy
from worker.rules.facts import ChatFacts
from worker.rules.gate import LineState
from worker.rules.states import DayStatus
from worker.store.due import CARD_IS_ACTIVE, CHAT_IS_DUE, DAY_UNMARKED, binds, sql_list
from worker.store.lines import ACCOUNT_JOIN, LINE_DAYS, LINE_STATE_COLUMNS, line_days_params, line_state
from worker.store.sql import Reader, Sql

UTC = ZoneInfo("UTC")

# --------------------------------------------------------------------------- a day's numbers


@dataclass(frozen=True)
class DayCount:
    """Chat-days of one line in one status, grouped by the first word of their reason."""

    line_phone: str
    status: str
    kind: str | None
    count: int
    confirmed: int
    day: dt.date | None = None


# Counted per (line, day) first, then kept for each line's own day: joined to the line-days
# before counting, the planner (which cannot know that every line shares one day) estimated the
# join at 1/200 of the day's rows and looked each chat-day's chat up by key ten times over (9.2 s
# at 300k chat-days on 10 lines, against 0.7 s this way; a million timed out at 15 s).
DAY_STATUS_COUNTS_SQL = Sql(
    f"""
            SELECT x.line_phone, x.status, x.kind, x.n, x.confirmed FROM (
                SELECT c.line_phone, d.day, d.status, substring(d.reason FROM '^[a-z_]+') AS kind,
                       count(*) AS n, count(*) FILTER (WHERE d.confirmed_by_rate_limit) AS confirmed
                FROM share_days d JOIN chats c ON c.id = d.chat_id
                WHERE d.day = ANY(:days)
                GROUP BY 1, 2, 3, 4
            ) x
            JOIN {LINE_DAYS} ON ld.line_phone = x.line_phone AND ld.day = x.day
            """
)


def day_status_counts(session: Reader, line_days: Mapping[str, dt.date]) -> list[DayCount]:
    """Every chat-day of each line's day (`{line: day}`), counted per line, status and reason
    kind ("card_inactive", "line_paused", ...)."""
    if not line_days:
        return []
    rows = session.execute(
        DAY_STATUS_COUNTS_SQL, {**line_days_params(line_days), "days": sorted(set(line_days.values()))}
    ).all()
    return [
        DayCount(r.line_phone, r.status, r.kind, int(r.n), int(r.confirmed), line_days[r.line_phone])
        for r in rows
    ]


UNMARKED_DUE_BY_LINE_SQL = Sql(
    f"""
            SELECT c.line_phone, count(*) FROM chats c
            JOIN lines l ON l.phone_number = c.line_phone
            JOIN {LINE_DAYS} ON ld.line_phone = c.line_phone
            WHERE {CHAT_IS_DUE}
              AND {CARD_IS_ACTIVE}
              AND {DAY_UNMARKED}
            GROUP BY c.line_phone
            """
)


def unmarked_due_by_line(
    session: Reader, *, line_days: Mapping[str, dt.date], now: dt.datetime, policy: Policy
) -> dict[str, int]:
    """Per line: chats due now that no sweep has marked for the line's day yet (the sweep's own
    rules; a held line's chats count: they are due, and wait)."""
    if not line_days:
        return {}
    rows = session.execute(
        UNMARKED_DUE_BY_LINE_SQL, {**line_days_params(line_days), **binds(now, policy)}
    ).all()
    return {str(p): int(n) for p, n in rows}


DAY_COUNTS_SQL = Sql("SELECT status, count(*) AS n FROM share_days WHERE day = :day GROUP BY status")


def day_counts(session: Reader, day: dt.date) -> dict[str, int]:
    """Chat-days of `day` per status."""
    rows = session.execute(DAY_COUNTS_SQL, {"day": day}).all()
    return {str(r.status): int(r.n) for r in rows}


@dataclass(frozen=True)
class RunRow:
    kind: str
    day: dt.date
    started_at: dt.datetime
    finished_at: dt.datetime | None
    scanned: int
    enqueued: int
    error: str | None


LAST_RUNS_SQL = Sql(
    """
            SELECT DISTINCT ON (kind) kind, day, started_at, finished_at, scanned, enqueued, error
            FROM sweep_runs ORDER BY kind, started_at DESC
            """
)


def last_runs(session: Reader) -> dict[str, RunRow]:
    """The newest run of each kind that records runs (by start time)."""
    rows = session.execute(LAST_RUNS_SQL).all()
    return {r.kind: RunRow(*r) for r in rows}


@dataclass(frozen=True)
class FailureRow:
    chat_id: uuid.UUID
    day: dt.date
    line_phone: str
    status: str
    reason: str | None
    at: dt.datetime
    http_status: int | None
    linq_code: int | None
    trace_id: str | None


# `day >= :since` in the lateral too: `day = d.day` alone is pruned per row at run time, and the
# plan would list every day's attempts partition (docs/retention.md §7).
RECENT_FAILURES_SQL = Sql(
    f"""
            SELECT d.chat_id, d.day, c.line_phone, d.status, d.reason,
                   coalesce(d.finished_at, d.updated_at) AS at, a.http_status, a.linq_code, a.trace_id
            FROM share_days d
            JOIN chats c ON c.id = d.chat_id
            LEFT JOIN LATERAL (
                SELECT http_status, linq_code, trace_id FROM attempts
                WHERE chat_id = d.chat_id AND day = d.day AND day >= :since
                ORDER BY attempt_no DESC LIMIT 1
            ) a ON true
            WHERE d.day >= :since AND d.status IN {sql_list((DayStatus.FAILED, DayStatus.UNKNOWN))}
            ORDER BY at DESC, d.chat_id
            LIMIT :limit
            """
)


def recent_failures(session: Reader, *, since: dt.date, limit: int) -> list[FailureRow]:
    """Failed and unknown-outcome chat-days since `since`, newest first, with their last attempt."""
    rows = session.execute(RECENT_FAILURES_SQL, {"since": since, "limit": limit}).all()
    return [FailureRow(*r) for r in rows]


# --------------------------------------------------------------------------- one chat's story


@dataclass(frozen=True)
class ChatInfo:
    chat_id: uuid.UUID
    line_phone: str
    service: str | None
    is_group: bool
    first_outbound_at: dt.datetime | None
    last_outbound_at: dt.datetime | None
    opted_out: bool
    opted_out_at: dt.datetime | None
    not_found_at: dt.datetime | None
    card_active: bool
    created_at: dt.datetime
    health_status: str | None = None

    @property
    def facts(self) -> ChatFacts:
        return ChatFacts(
            service=self.service,
            is_group=self.is_group,
            first_outbound_at=self.first_outbound_at,
            last_outbound_at=self.last_outbound_at,
            opted_out=self.opted_out,
            card_active=self.card_active,
            not_found=self.not_found_at is not None,
            health_status=self.health_status,
        )


CHAT_INFO_SQL = Sql(
    f"""
            SELECT c.id, c.line_phone, c.service, c.is_group, c.first_outbound_at, c.last_outbound_at,
                   c.opted_out, c.opted_out_at, c.not_found_at, l.card_active, c.created_at,
                   c.health_status, {LINE_STATE_COLUMNS}
            FROM chats c JOIN lines l ON l.phone_number = c.line_phone {ACCOUNT_JOIN}
            WHERE c.id = :c
            """
)


def chat_info(
    session: Reader, chat_id: uuid.UUID, *, default_zone: ZoneInfo = UTC
) -> tuple[ChatInfo, LineState] | None:
    """The chat, and its line's state (for the gate)."""
    row = session.execute(CHAT_INFO_SQL, {"c": chat_id}).one_or_none()
    if row is None:
        return None
    return ChatInfo(*row[:12]), line_state(row, default_zone)


@dataclass(frozen=True)
class DayRow:
    day: dt.date
    status: str
    reason: str | None
    attempts: int
    claims: int
    lost_claims: int
    enqueues: int
    confirmed_by_rate_limit: bool
    created_at: dt.datetime
    finished_at: dt.datetime | None


CHAT_DAYS_SQL = Sql(
    """
            SELECT day, status, reason, attempts, claims, lost_claims, enqueues,
                   confirmed_by_rate_limit, created_at, finished_at
            FROM share_days WHERE chat_id = :c AND (CAST(:since AS date) IS NULL OR day >= :since)
            ORDER BY day DESC
            """
)


def chat_days(session: Reader, chat_id: uuid.UUID, *, since: dt.date | None) -> list[DayRow]:
    rows = session.execute(CHAT_DAYS_SQL, {"c": chat_id, "since": since}).all()
    return [DayRow(*r) for r in rows]


@dataclass(frozen=True)
class AttemptRow:
    day: dt.date
    attempt_no: int
    started_at: dt.datetime
    finished_at: dt.datetime | None
    outcome: str | None
    http_status: int | None
    linq_code: int | None
    trace_id: str | None
    error: str | None
    retry_after_s: float | None
    task_id: str | None


CHAT_ATTEMPTS_SQL = Sql(
    """
            SELECT day, attempt_no, started_at, finished_at, outcome, http_status, linq_code, trace_id,
                   error, retry_after_s, task_id
            FROM attempts WHERE chat_id = :c AND (CAST(:since AS date) IS NULL OR day >= :since)
            ORDER BY day DESC, attempt_no
            """
)


def chat_attempts(session: Reader, chat_id: uuid.UUID, *, since: dt.date | None) -> list[AttemptRow]:
    rows = session.execute(CHAT_ATTEMPTS_SQL, {"c": chat_id, "since": since}).all()
    return [AttemptRow(*r) for r in rows]


@dataclass(frozen=True)
class AuditRow:
    at: dt.datetime
    actor: str
    action: str
    outcome: str
    detail: str | None


CHAT_AUDIT_SQL = Sql(
    "SELECT at, actor, action, outcome, detail FROM audit_events WHERE chat_ref = :c "
    "ORDER BY at DESC, id DESC LIMIT :limit"
)


def chat_audit(session: Reader, chat_ref: str, *, limit: int = 50) -> list[AuditRow]:
    rows = session.execute(CHAT_AUDIT_SQL, {"c": chat_ref, "limit": limit}).all()
    return [AuditRow(*r) for r in rows]


# --------------------------------------------------------------------------- the checker and the demo


@dataclass(frozen=True)
class DayEntries:
    """The chat-days of a day that the checker judges alike, counted: one status, the reason's
    first word, whether any call reached Linq (an HTTP answer is recorded), and, for a day
    confirmed by a 429, whether that 429 came inside Linq's window after an unknown attempt.
    `chat_ids` (by id) and their whole `reasons` are there for every group whose chats the
    checker may name; None for the two it only counts (see DAY_ENTRY_GROUPS_SQL)."""

    status: str
    reason: str
    confirmed_by_rate_limit: bool
    reached_linq: bool
    confirmation_in_window: bool
    count: int
    chat_ids: list[uuid.UUID] | None
    reasons: list[str | None] | None

    def named(self) -> list[tuple[uuid.UUID, str | None]]:
        """(chat, whole reason) of each chat-day of the group, by chat id."""
        if self.chat_ids is None or self.reasons is None:
            raise RuntimeError(f"day entries of {self.status}/{self.reason} were counted, not named")
        return sorted(zip(self.chat_ids, self.reasons, strict=True), key=lambda pair: pair[0])


# One pass over the day's partitions (docs/retention.md §7), grouped in PostgreSQL so a day of a
# million chat-days is a few rows here, not a million. Whether a call reached Linq (an attempt
# with an HTTP answer) is looked up for failed days only, the one status the checker asks it of,
# and the confirmation window for days confirmed by a 429 only: one index probe each, not a pass
# over the day's attempts. Every table names the day as the bound :d, so the planner opens that
# day's partitions only. The chats are named for every group but the two the checker only
# counts, whatever their number: succeeded without a 429 confirmation, and skipped (`ops.check`:
# neither can be missed). No ORDER BY in the aggregates: it would sort the whole day.
DAY_ENTRY_GROUPS_SQL = Sql(
    f"""
            SELECT status, reason, confirmed_by_rate_limit, reached_linq, confirmation_in_window,
                   count(*) AS n,
                   array_agg(chat_id) FILTER (WHERE named) AS chat_ids,
                   array_agg(full_reason) FILTER (WHERE named) AS reasons
            FROM (
                SELECT d.chat_id, d.status, split_part(coalesce(d.reason, '-'), ' ', 1) AS reason,
                       d.confirmed_by_rate_limit, d.reason AS full_reason,
                       CASE WHEN d.status = '{DayStatus.FAILED.value}' THEN EXISTS (
                           SELECT 1 FROM attempts a
                           WHERE a.chat_id = d.chat_id AND a.day = :d AND a.http_status IS NOT NULL
                       ) ELSE false END AS reached_linq,
                       CASE WHEN d.confirmed_by_rate_limit THEN EXISTS (
                           SELECT 1 FROM attempts c JOIN attempts u
                             ON u.chat_id = c.chat_id AND u.day = c.day AND u.id <> c.id
                           WHERE c.chat_id = d.chat_id AND u.chat_id = d.chat_id
                             AND c.day = :d AND u.day = :d
                             AND c.http_status = 429 AND c.outcome = 'ok'
                             AND (u.outcome = 'unknown' OR u.outcome IS NULL)
                             AND u.started_at <= coalesce(c.finished_at, c.started_at)
                             AND coalesce(c.finished_at, c.started_at) - u.started_at
                                 < make_interval(secs => :window)
                       ) ELSE false END AS confirmation_in_window,
                       NOT (d.status = '{DayStatus.SKIPPED.value}' OR (
                           d.status = '{DayStatus.SUCCEEDED.value}' AND NOT d.confirmed_by_rate_limit
                       )) AS named
                FROM share_days d
                WHERE d.day = :d
            ) e
            GROUP BY 1, 2, 3, 4, 5
            """
)


def day_entry_groups(session: Reader, day: dt.date, *, window_s: float = 300.0) -> list[DayEntries]:
    rows = session.execute(DAY_ENTRY_GROUPS_SQL, {"d": day, "window": window_s}).all()
    return [
        DayEntries(
            status=r.status,
            reason=r.reason,
            confirmed_by_rate_limit=r.confirmed_by_rate_limit,
            reached_linq=r.reached_linq,
            confirmation_in_window=r.confirmation_in_window,
            count=int(r.n),
            chat_ids=r.chat_ids,
            reasons=r.reasons,
        )
        for r in rows
    ]


CHAT_FACTS_COLUMNS = """c.id, c.service, c.is_group, c.first_outbound_at, c.last_outbound_at,
                   c.opted_out, c.not_found_at IS NOT NULL AS not_found, l.card_active, c.health_status"""
CHAT_FACTS_PAGE_SQL = Sql(
    f"""
            SELECT {CHAT_FACTS_COLUMNS}
            FROM chats c JOIN lines l ON l.phone_number = c.line_phone
            WHERE c.id > :after
            ORDER BY c.id LIMIT :limit
            """
)
UNMARKED_DUE_FACTS_SQL = Sql(
    f"""
            SELECT {CHAT_FACTS_COLUMNS}
            FROM chats c JOIN lines l ON l.phone_number = c.line_phone
            JOIN {LINE_DAYS} ON ld.line_phone = c.line_phone
            WHERE {CHAT_IS_DUE}
              AND {CARD_IS_ACTIVE}
              AND {DAY_UNMARKED}
            ORDER BY c.id
            """
)


def _facts(r: Any) -> ChatFacts:
    return ChatFacts(
        service=r.service,
        is_group=r.is_group,
        first_outbound_at=r.first_outbound_at,
        last_outbound_at=r.last_outbound_at,
        opted_out=r.opted_out,
        card_active=r.card_active,
        not_found=r.not_found,
        health_status=r.health_status,
    )


def chat_facts(session: Reader, *, page_size: int = 1000) -> Iterator[tuple[uuid.UUID, ChatFacts]]:
    """Every chat's facts, by id in pages, for a judge that applies the Python rule to them."""
    after = uuid.UUID(int=0)
    while True:
        rows = session.execute(CHAT_FACTS_PAGE_SQL, {"limit": page_size, "after": after}).all()
        for r in rows:
            yield r.id, _facts(r)
        if len(rows) < page_size:
            return
        after = rows[-1].id


def unmarked_due_facts(
    session: Reader, *, line_days: Mapping[str, dt.date], now: dt.datetime, policy: Policy
) -> list[tuple[uuid.UUID, ChatFacts]]:
    """The facts of the chats of the given lines (`{line: day}`) that the SQL due rule calls due
    now and that have no chat-day row for the line's day: what `check` judges again with the
    Python rule. One statement; the anti-join reads those days' partitions only."""
    if not line_days:
        return []
    rows = session.execute(
        UNMARKED_DUE_FACTS_SQL, {**line_days_params(line_days), **binds(now, policy)}
    ).all()
    return [(r.id, _facts(r)) for r in rows]


DAY_ATTEMPTS_SQL = Sql(
    "SELECT attempt_no, started_at, finished_at, outcome, http_status, linq_code, trace_id, "
    "task_id FROM attempts WHERE chat_id = :c AND day = :d ORDER BY attempt_no"
)


def day_attempts(session: Reader, chat_id: uuid.UUID, day: dt.date) -> list[dict[str, Any]]:
    """One chat-day's attempts, as plain mappings (the checker shows them as they are)."""
    return [r._asdict() for r in session.execute(DAY_ATTEMPTS_SQL, {"c": chat_id, "d": day})]


REPEATED_WITH_SUCCESS_SQL = Sql(
    """
            SELECT chat_id FROM attempts WHERE day = :d GROUP BY chat_id
            HAVING count(*) > 1 AND count(*) FILTER (WHERE http_status BETWEEN 200 AND 299) >= 1
            """
)


def repeated_with_success(session: Reader, day: dt.date) -> list[uuid.UUID]:
    """Chats of `day` with more than one attempt, at least one of them answered 2xx."""
    return list(session.execute(REPEATED_WITH_SUCCESS_SQL, {"d": day}).scalars())


ATTEMPT_STATS_SQL = Sql(
    """
                SELECT count(*) FILTER (WHERE outcome = 'retryable') AS retries,
                       count(DISTINCT chat_id) FILTER (WHERE attempt_no > 1) AS retried_chats,
                       count(*) FILTER (WHERE outcome = 'unknown') AS unknown
                FROM attempts WHERE day = :d
                """
)


def attempt_stats(session: Reader, day: dt.date) -> dict[str, int]:
    """Retryable attempts, chats tried more than once, unknown outcomes (the demo's summary)."""
    row = session.execute(ATTEMPT_STATS_SQL, {"d": day}).one()
    return {"retries": int(row.retries), "retried_chats": int(row.retried_chats), "unknown": int(row.unknown)}
