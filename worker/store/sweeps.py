"""The passes' statements: each line's due pages and the marks a pass decided (queued or held),
held chat-days waking for the release pass, expired leases re-queued, poison and past days
ended, one row per pass in `sweep_runs`. Importing it brings no SQLAlchemy (`cardshare recover`
runs its statements on `store.plain`)."""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from worker.rules.cadence import Policy
from worker.rules.states import MISSABLE_STATUSES, DayStatus
from worker.store import arrays
from worker.store.due import CHAT_IS_DUE, REQUEUABLE, binds, sql_list
from worker.store.lines import LINE_DAYS, line_days_params
from worker.store.sql import Reader, Sql

if TYPE_CHECKING:
    from sqlalchemy.orm import Session

MISSABLE_OR_HELD = sql_list((*MISSABLE_STATUSES, DayStatus.HELD))

NIL_UUID = uuid.UUID(int=0)  # keyset start: every chat id sorts after it

# --------------------------------------------------------------------------- due pages


@dataclass(frozen=True)
class Page:
    """One keyset page of a line's due chats not yet marked for the day: how many, where the next
    page starts, those a pass may mark (no row for the day yet, or an open, not held one whose
    lease ended), and their last outbound times."""

    scanned: int
    last_key: tuple[dt.date, uuid.UUID] | None
    markable: list[uuid.UUID]
    last_outbound: dict[uuid.UUID, dt.datetime | None]

    @property
    def last_id(self) -> uuid.UUID | None:
        return None if self.last_key is None else self.last_key[1]


# Only chats whose `marked_day` is before the line's day (docs/decisions.md §17): those the
# event path or an earlier sweep marked today are not read again. Keyset order (marked_day, id)
# through `ix_chats_line_marked`; marking moves a visited chat out of the range, never ahead.
DUE_PAGE_SQL = Sql(
    f"""
            SELECT c.id, c.marked_day, c.last_outbound_at,
                   (d.chat_id IS NULL
                    OR (d.status IN {REQUEUABLE} AND d.lease_until < now()
                        AND NOT (d.status = 'claimed' AND d.lost_claims + 1 >= :max_lost))) AS markable
            FROM chats c
            JOIN lines l ON l.phone_number = c.line_phone
            LEFT JOIN share_days d ON d.chat_id = c.id AND d.day = :day
            WHERE c.line_phone = :line AND c.marked_day < :day
              AND (c.marked_day, c.id) > (:after_day, :after)
              AND {CHAT_IS_DUE}
            ORDER BY c.marked_day, c.id
            LIMIT :limit
            """
)

# Where a line's walk starts: before every (marked_day, id).
PAGE_START = (dt.date(1, 1, 1), uuid.UUID(int=0))


def due_page(
    session: Session,
    *,
    line: str,
    day: dt.date,
    now: dt.datetime,
    policy: Policy,
    after: tuple[dt.date, uuid.UUID] | None,
    limit: int,
    max_lost_claims: int,
) -> Page:
    """One page of `line`'s due chats for `day` not marked for it yet (the line's card is the
    caller's check). Reads only: `mark` writes what the plan decided."""
    start = after or PAGE_START
    rows = session.execute(
        DUE_PAGE_SQL,
        {
            "line": line,
            "day": day,
            "after_day": start[0],
            "after": start[1],
            "limit": limit,
            "max_lost": max_lost_claims,
            **binds(now, policy),
        },
    ).all()
    return Page(
        scanned=len(rows),
        last_key=(rows[-1].marked_day, rows[-1].id) if rows else None,
        markable=[r.id for r in rows if r.markable],
        last_outbound={r.id: r.last_outbound_at for r in rows if r.markable},
    )


@dataclass(frozen=True)
class Mark:
    """What a pass decided for one chat-day: queued (published now) or held, resting `delay_s`."""

    chat_id: uuid.UUID
    status: DayStatus
    reason: str | None
    delay_s: float


def mark_params(
    day: dt.date, marks: Sequence[Mark], outbound: Mapping[uuid.UUID, dt.datetime | None] | None
) -> dict[str, object]:
    """The binds of a statement that writes `marks` as `day`'s chat-days (MARK_SQL here,
    INSERT_MARKS_SQL in store.outbound): one array literal per column (`store.arrays`), in the
    marks' order."""
    outbound = outbound or {}
    return {
        "day": day,
        "ids": arrays.uuids(m.chat_id for m in marks),
        "statuses": arrays.texts(m.status.value for m in marks),
        "reasons": arrays.texts(m.reason for m in marks),
        "delays": arrays.floats(m.delay_s for m in marks),
        "outbound": arrays.timestamps(outbound.get(m.chat_id) for m in marks),
    }


MARK_SQL = Sql(
    f"""
            WITH marked AS (
            INSERT INTO share_days AS d (chat_id, day, status, reason, lease_until, enqueues,
                                         outbound_at)
            SELECT p.chat_id, :day, p.status, p.reason, now() + make_interval(secs => p.delay),
                   (p.status = 'queued')::int, p.outbound_at
            FROM unnest(CAST(:ids AS uuid[]), CAST(:statuses AS text[]), CAST(:reasons AS text[]),
                        CAST(:delays AS float8[]), CAST(:outbound AS timestamptz[]))
                 AS p(chat_id, status, reason, delay, outbound_at)
            ON CONFLICT (chat_id, day) DO UPDATE SET
                status = EXCLUDED.status,
                reason = EXCLUDED.reason,
                lease_until = EXCLUDED.lease_until,
                enqueues = d.enqueues + EXCLUDED.enqueues,
                lost_claims = d.lost_claims + (d.status = 'claimed')::int,
                updated_at = now()
            WHERE d.status IN {REQUEUABLE}
              AND d.lease_until < now()
              AND NOT (d.status = 'claimed' AND d.lost_claims + 1 >= :max_lost)
            RETURNING d.chat_id, d.status
            )
            SELECT chat_id, status FROM marked
            """
)

# After the marks committed, in a transaction of its own that waits for no one: a chat another
# transaction holds (a webhook recording its activity) is skipped and simply read again by the
# next sweep. Waiting here, while holding the page's new rows, could deadlock with that webhook.
# The rows are found once, locked, and updated by their ctid (a Tid Scan): joining back by id let
# the planner hash-join a sequential scan of all chats for each page (bench/README.md §1). A
# locked row cannot move, so its ctid holds until the update.
NOTE_MARKED_SQL = Sql(
    """
            WITH t AS (
                SELECT ctid FROM chats WHERE id = ANY(CAST(:ids AS uuid[])) AND marked_day < :day
                FOR NO KEY UPDATE SKIP LOCKED
            )
            UPDATE chats c SET marked_day = :day
            WHERE c.ctid = ANY(ARRAY(SELECT ctid FROM t))
            """
)


def note_marked(session: Session, *, day: dt.date, chat_ids: Sequence[uuid.UUID]) -> int:
    """The chats' `marked_day` moves to `day`: the sweep does not read them again that day
    (docs/decisions.md §17). Call it after the marks committed."""
    if not chat_ids:
        return 0
    result = session.execute(NOTE_MARKED_SQL, {"day": day, "ids": arrays.uuids(sorted(set(chat_ids)))})
    return int(getattr(result, "rowcount", 0))


def mark(
    session: Session,
    *,
    day: dt.date,
    marks: Sequence[Mark],
    max_lost_claims: int,
    outbound: Mapping[uuid.UUID, dt.datetime | None] | None = None,
) -> list[tuple[uuid.UUID, str]]:
    """Write the plan for `day`'s chat-days; (chat, status) of those it took. A chat-day another
    pass or a worker took meanwhile is left alone (row locks on the conflict), so overlapping
    sweeps enqueue each chat-day once. `outbound`: the time each chat-day's latency starts from
    (docs/decisions.md §17), for rows inserted."""
    if not marks:
        return []
    rows = session.execute(MARK_SQL, {**mark_params(day, marks, outbound), "max_lost": max_lost_claims}).all()
    return [(r.chat_id, str(r.status)) for r in rows]


# --------------------------------------------------------------------------- the release pass

RELEASE_SQL = Sql(
    f"""
            SELECT d.chat_id, d.day, c.line_phone, d.reason
            FROM share_days d
            JOIN chats c ON c.id = d.chat_id
            JOIN {LINE_DAYS} ON ld.line_phone = c.line_phone AND ld.day = d.day
            WHERE d.day = ANY(:days) AND d.status = 'held' AND d.lease_until <= now()
            ORDER BY d.lease_until
            LIMIT :limit
            FOR UPDATE OF d SKIP LOCKED
            """
)


@dataclass(frozen=True)
class Waking:
    """A held chat-day whose rest ended: its slot came, or its hold may have lifted."""

    chat_id: uuid.UUID
    day: dt.date
    line_phone: str
    reason: str | None


def waking(session: Session, *, line_days: Mapping[str, dt.date], limit: int) -> list[Waking]:
    """Held chat-days of each line's today whose rest ended, oldest first, locked for this
    transaction (a concurrent pass skips them)."""
    if not line_days:
        return []
    rows = session.execute(
        RELEASE_SQL,
        {**line_days_params(line_days), "days": sorted(set(line_days.values())), "limit": limit},
    ).all()
    return [Waking(r.chat_id, r.day, r.line_phone, r.reason) for r in rows]


RELEASE_APPLY_SQL = Sql(
    """
            UPDATE share_days d SET status = p.status, reason = p.reason,
                lease_until = now() + make_interval(secs => p.delay),
                enqueues = d.enqueues + (p.status = 'queued')::int, updated_at = now()
            FROM unnest(CAST(:ids AS uuid[]), CAST(:days AS date[]), CAST(:statuses AS text[]),
                        CAST(:reasons AS text[]), CAST(:delays AS float8[]))
                 AS p(chat_id, day, status, reason, delay)
            WHERE d.chat_id = p.chat_id AND d.day = p.day AND d.status = 'held'
            RETURNING d.chat_id, d.day, d.status
            """
)


def apply_release(
    session: Session, marks: Sequence[tuple[dt.date, Mark]]
) -> list[tuple[uuid.UUID, dt.date, str]]:
    """Write what the release pass decided for the chat-days `waking` returned (and locked)."""
    if not marks:
        return []
    rows = session.execute(
        RELEASE_APPLY_SQL,
        {
            "ids": [m.chat_id for _, m in marks],
            "days": [d for d, _ in marks],
            "statuses": [m.status.value for _, m in marks],
            "reasons": [m.reason for _, m in marks],
            "delays": [float(m.delay_s) for _, m in marks],
        },
    ).all()
    return [(r.chat_id, r.day, str(r.status)) for r in rows]


# --------------------------------------------------------------------------- recovery

# Keyset pages over the day's open rows in (lease_until, chat_id) order (ix_share_days_open, which
# holds only open rows): each page starts where the last one stopped, so a pass reads each row
# once however many are stale. (Ordering every stale row again for each page was quadratic.)
REQUEUE_EXPIRED_SQL = Sql(
    f"""
            WITH expired AS (
                SELECT chat_id, day, lease_until FROM share_days
                WHERE day = :day AND status IN {REQUEUABLE}
                  AND (lease_until, chat_id) > (:after_lease, :after_chat)
                  AND (lease_until < now()
                       OR (:drained AND status = 'queued'
                           AND updated_at < now() - make_interval(secs => :stale)))
                  AND NOT (status = 'claimed' AND lost_claims + 1 >= :max_lost)
                ORDER BY lease_until, chat_id
                LIMIT :limit
                FOR UPDATE SKIP LOCKED
            )
            UPDATE share_days d SET
                status = 'queued',
                lease_until = now() + make_interval(secs => :qlease),
                enqueues = d.enqueues + 1,
                lost_claims = d.lost_claims + (d.status = 'claimed')::int,
                updated_at = now()
            FROM expired e WHERE d.chat_id = e.chat_id AND d.day = e.day
              -- The day again, as a constant: the planner then opens only that day's partition
              -- for the update (through e.day alone it plans every kept day's; test_partitions).
              AND d.day = :day
            RETURNING d.chat_id, e.lease_until AS old_lease
            """
)

# Where a pass starts: before every (lease_until, chat_id).
KEYSET_START = (dt.datetime(1, 1, 1, tzinfo=dt.UTC), NIL_UUID)


@dataclass(frozen=True)
class Requeued:
    chat_ids: list[uuid.UUID]
    # The largest (lease_until, chat_id) of the page, before its update: the next page's start.
    last: tuple[dt.datetime, uuid.UUID] | None


def requeue_expired(
    session: Reader,
    *,
    day: dt.date,
    limit: int,
    queue_lease_s: float,
    queue_drained: bool,
    stale_queued_s: float,
    max_lost_claims: int,
    after: tuple[dt.datetime, uuid.UUID] = KEYSET_START,
) -> Requeued:
    """Open, not held chat-days of `day` (one line's today) whose lease ran out (crash, lost
    message, retry due): re-queue. Held ones are the release pass's (docs/decisions.md §10).
    One keyset page, starting after `after`.

    With the broker queue drained, a 'queued' row untouched for `stale_queued_s` lost its
    message (Redis restarted, a publish failed, a killed worker had prefetched it), whatever its
    queue lease says (docs/decisions.md §9).
    """
    rows = session.execute(
        REQUEUE_EXPIRED_SQL,
        {
            "day": day,
            "limit": limit,
            "qlease": queue_lease_s,
            "drained": queue_drained,
            "stale": stale_queued_s,
            "max_lost": max_lost_claims,
            "after_lease": after[0],
            "after_chat": after[1],
        },
    ).all()
    last = max(((r.old_lease, r.chat_id) for r in rows), default=None)
    return Requeued([r.chat_id for r in rows], last)


FAIL_POISONED_SQL = Sql(
    """
            UPDATE share_days SET status = 'failed', finished_at = now(), updated_at = now(),
                lost_claims = lost_claims + 1,
                reason = 'poison: the worker process holding the claim died ' || (lost_claims + 1)
                         || ' times while sharing this chat (killed or crashed; last task '
                         || coalesce(task_id, '?') || '); not retried today'
            WHERE day = ANY(:days) AND status = 'claimed' AND lease_until < now()
              AND lost_claims + 1 >= :max_lost
            """
)


def fail_poisoned(session: Reader, *, days: Iterable[dt.date], max_lost_claims: int) -> int:
    """Chat-days whose holder vanished `max_lost_claims` times: stop trying, say why."""
    result = session.execute(FAIL_POISONED_SQL, {"days": sorted(set(days)), "max_lost": max_lost_claims})
    return int(getattr(result, "rowcount", 0))


_CLOSE_SET = """status = CASE WHEN {d}status = 'held' THEN 'skipped' ELSE 'failed' END,
                reason = CASE WHEN {d}status = 'held'
                              THEN left(coalesce({d}reason, 'held') || ' (its day ended while held)', 500)
                              ELSE 'day_over: the day ended before the share succeeded' END,
                finished_at = now(), updated_at = now()"""
CLOSE_PAST_DAYS_SQL = Sql(
    f"""
            UPDATE share_days SET {_CLOSE_SET.format(d="")}
            WHERE day < :before AND day >= :since AND status IN {MISSABLE_OR_HELD}
            """
)
CLOSE_LINE_PAST_DAYS_SQL = Sql(
    f"""
            UPDATE share_days d SET {_CLOSE_SET.format(d="d.")}
            FROM chats c, {LINE_DAYS}
            WHERE c.id = d.chat_id AND ld.line_phone = c.line_phone
              AND d.day >= :before AND d.day < ld.day AND d.status IN {MISSABLE_OR_HELD}
            """
)


def close_past_days(
    session: Session, *, line_days: Mapping[str, dt.date], since: dt.date | None = None
) -> int:
    """Missed days are not made up (docs/decisions.md §8): end what a line's past days left open,
    from `since` on (`rules.cadence.close_from`; None: every kept day).
    Held chat-days end `skipped`, naming their hold (§10); 'unknown' stays unknown: it counts
    neither as shared nor as missed. Each line's own today decides what is past for it."""
    if not line_days:
        return 0
    before = min(line_days.values())
    params = {"before": before, "since": since or dt.date.min}
    total = int(getattr(session.execute(CLOSE_PAST_DAYS_SQL, params), "rowcount", 0))
    if max(line_days.values()) > before:
        # Lines whose day already turned while others' has not.
        ahead = {p: d for p, d in line_days.items() if d > before}
        result = session.execute(CLOSE_LINE_PAST_DAYS_SQL, {**line_days_params(ahead), "before": before})
        total += int(getattr(result, "rowcount", 0))
    return total


# --------------------------------------------------------------------------- runs and locks

START_RUN_SQL = Sql(
    "INSERT INTO sweep_runs (kind, day, started_at) VALUES (:k, :d, clock_timestamp()) RETURNING id"
)


def start_run(session: Session, kind: str, day: dt.date) -> int:
    return int(session.execute(START_RUN_SQL, {"k": kind, "d": day}).scalar_one())


LAST_SWEPT_SQL = Sql(
    "SELECT max(day) FROM sweep_runs WHERE kind = 'sweep' AND finished_at IS NOT NULL AND error IS NULL"
)


def last_swept_day(session: Session) -> dt.date | None:
    """The day of the last sweep that finished without an error (it closed the days before)."""
    day = session.execute(LAST_SWEPT_SQL).scalar_one_or_none()
    return day if isinstance(day, dt.date) else None


FINISH_RUN_SQL = Sql(
    "UPDATE sweep_runs SET finished_at = clock_timestamp(), scanned = :s, enqueued = :e, "
    "error = :err WHERE id = :id"
)


def finish_run(session: Session, run_id: int, *, scanned: int, enqueued: int, error: str | None) -> None:
    session.execute(FINISH_RUN_SQL, {"id": run_id, "s": scanned, "e": enqueued, "err": error})
