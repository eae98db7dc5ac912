"""The event path's statements: which chats an outbound activity just made due today, and
their chat-days marked (queued or held) in the caller's transaction (docs/decisions.md §17).

The selection is the sweep's own rule (`store.due`: the due predicate, the line's card, no row
for the line's day yet); the marks come from `sharing.plan`, as the sweep's do. A chat-day is
only ever inserted here (ON CONFLICT DO NOTHING): one another path marked first is left alone.
"""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from sqlalchemy.orm import Session

from worker.rules.cadence import Policy
from worker.store.due import CARD_IS_ACTIVE, CHAT_IS_DUE, DAY_UNMARKED_ON, binds
from worker.store.sql import Sql
from worker.store.sweeps import Mark, mark_params

DUE_UNMARKED_SQL = Sql(
    f"""
            SELECT c.id, c.line_phone FROM chats c
            JOIN lines l ON l.phone_number = c.line_phone
            WHERE c.id = ANY(:ids) AND c.line_phone = ANY(:lines)
              AND {CHAT_IS_DUE}
              AND {CARD_IS_ACTIVE}
              AND {DAY_UNMARKED_ON}
            ORDER BY c.id
            """
)


@dataclass(frozen=True)
class DueChat:
    chat_id: uuid.UUID
    line_phone: str


def due_unmarked(
    session: Session,
    *,
    chat_ids: Sequence[uuid.UUID],
    line_days: Mapping[str, dt.date],
    now: dt.datetime,
    policy: Policy,
) -> list[DueChat]:
    """Of `chat_ids`, those due now with no chat-day yet for their line's day (`{line: day}`).
    One statement per distinct day (lines in zones whose day differs): usually one."""
    if not chat_ids or not line_days:
        return []
    by_day: dict[dt.date, list[str]] = {}
    for phone, day in line_days.items():
        by_day.setdefault(day, []).append(phone)
    out: list[DueChat] = []
    for day, phones in sorted(by_day.items()):
        rows = session.execute(
            DUE_UNMARKED_SQL,
            {"ids": sorted(set(chat_ids)), "lines": sorted(phones), "day": day, **binds(now, policy)},
        ).all()
        out.extend(DueChat(r.id, r.line_phone) for r in rows)
    return out


INSERT_MARKS_SQL = Sql(
    """
            WITH ins AS (
                INSERT INTO share_days AS d (chat_id, day, status, reason, lease_until, enqueues,
                                             outbound_at)
                SELECT p.chat_id, :day, p.status, p.reason, now() + make_interval(secs => p.delay),
                       (p.status = 'queued')::int, p.outbound_at
                FROM unnest(CAST(:ids AS uuid[]), CAST(:statuses AS text[]), CAST(:reasons AS text[]),
                            CAST(:delays AS float8[]), CAST(:outbound AS timestamptz[]))
                     AS p(chat_id, status, reason, delay, outbound_at)
                ON CONFLICT (chat_id, day) DO NOTHING
                RETURNING d.chat_id, d.status
            ), seen AS (
                UPDATE chats c SET marked_day = :day
                FROM ins WHERE c.id = ins.chat_id AND c.marked_day < :day
            )
            SELECT chat_id, status FROM ins
            """
)


def insert_marks(
    session: Session,
    *,
    day: dt.date,
    marks: Sequence[Mark],
    outbound: Mapping[uuid.UUID, dt.datetime | None],
) -> list[tuple[uuid.UUID, str]]:
    """Insert the planned chat-days of `day`, with the outbound time that made each due; (chat,
    status) of those inserted. The chats' `marked_day` moves to `day` in the same statement."""
    if not marks:
        return []
    rows = session.execute(INSERT_MARKS_SQL, mark_params(day, marks, outbound)).all()
    return [(r.chat_id, str(r.status)) for r in rows]
