"""Lines as the gate sees them: Linq's reputation and status, the operator's pause, time zone,
hours and pace, and the account-wide pause (`account_controls`). Also the statements that wake
held chat-days up again when a hold lifts (docs/decisions.md §10).

The columns the gate reads are written once here (`LINE_STATE_COLUMNS`, `ACCOUNT_JOIN`) and
composed into every statement that needs a line's state, the share path's load included.
"""

from __future__ import annotations

import datetime as dt
import zoneinfo
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from worker.rules.gate import Hours, LineState, Pause
from worker.store.sql import Reader, Sql

if TYPE_CHECKING:
    from sqlalchemy.orm import Session

# Aliases: `l` a `lines` row, `a` the account_controls row (LEFT JOINed: no row, no pause).
LINE_STATE_COLUMNS = """l.phone_number AS l_phone, l.card_active AS l_card_active,
                   l.reputation AS l_reputation, l.linq_status AS l_linq_status,
                   l.timezone AS l_timezone, l.hours_start AS l_hours_start, l.hours_end AS l_hours_end,
                   l.pace_per_minute AS l_pace, l.paused_at AS l_paused_at,
                   l.paused_until AS l_paused_until, l.paused_reason AS l_paused_reason,
                   l.paused_by AS l_paused_by, a.paused_at AS a_paused_at,
                   a.paused_until AS a_paused_until, a.paused_reason AS a_paused_reason,
                   a.paused_by AS a_paused_by"""
ACCOUNT_JOIN = "LEFT JOIN account_controls a ON a.id = 1"


def zone_of(name: str | None, default: zoneinfo.ZoneInfo) -> zoneinfo.ZoneInfo:
    """A line's zone; one that no longer loads (tzdata changed) falls back to the default rather
    than stopping every pass (zones are checked when set)."""
    if not name:
        return default
    try:
        return zoneinfo.ZoneInfo(name)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        return default


def line_state(row: Any, default_zone: zoneinfo.ZoneInfo) -> LineState:
    """A row holding LINE_STATE_COLUMNS as the gate's LineState."""
    pause = None
    if row.l_paused_at is not None:
        pause = Pause(row.l_paused_at, row.l_paused_until, row.l_paused_reason, row.l_paused_by)
    account = None
    if row.a_paused_at is not None:
        account = Pause(row.a_paused_at, row.a_paused_until, row.a_paused_reason, row.a_paused_by)
    hours = None
    if row.l_hours_start is not None and row.l_hours_end is not None:
        hours = Hours(int(row.l_hours_start), int(row.l_hours_end))
    return LineState(
        phone=row.l_phone,
        zone=zone_of(row.l_timezone, default_zone),
        reputation=row.l_reputation,
        linq_status=row.l_linq_status,
        pause=pause,
        account_pause=account,
        hours=hours,
        pace_per_minute=row.l_pace,
    )


@dataclass(frozen=True)
class LineRow:
    """A line as `line list`, `status` and the passes read it."""

    state: LineState
    card_active: bool
    timezone: str | None  # as set (None: the default)
    reputation_at: dt.datetime | None
    linq_status_at: dt.datetime | None
    line_type: str | None


LINES_SQL = Sql(
    f"""
            SELECT {LINE_STATE_COLUMNS}, l.reputation_at, l.linq_status_at, l.line_type
            FROM lines l {ACCOUNT_JOIN}
            WHERE :all OR l.phone_number = ANY(:phones)
            ORDER BY l.phone_number
            """
)


def lines(
    session: Reader, default_zone: zoneinfo.ZoneInfo, phones: Sequence[str] | None = None
) -> list[LineRow]:
    """Every line (or the given ones) with its state."""
    rows = session.execute(LINES_SQL, {"all": phones is None, "phones": list(phones or [])}).all()
    return [
        LineRow(
            state=line_state(r, default_zone),
            card_active=bool(r.l_card_active),
            timezone=r.l_timezone,
            reputation_at=r.reputation_at,
            linq_status_at=r.linq_status_at,
            line_type=r.line_type,
        )
        for r in rows
    ]


# --------------------------------------------------------------------------- Linq's view of a line

RECORD_REPUTATION_SQL = Sql(
    """
            INSERT INTO lines AS l (phone_number, reputation, reputation_at, line_type)
            VALUES (:p, :reputation, :at, :line_type)
            ON CONFLICT (phone_number) DO NOTHING
            """
)
# The same reading again (every sweep) is written only once the last is an hour old: a sweep
# that finds nothing new writes nothing (issue 17 point 4). A plain UPDATE, not ON CONFLICT DO
# UPDATE WHERE, which would lock (and log) the row even when nothing changes.
UPDATE_REPUTATION_SQL = Sql(
    """
            UPDATE lines l SET reputation = :reputation, reputation_at = :at,
                line_type = coalesce(CAST(:line_type AS text), l.line_type), updated_at = now()
            WHERE l.phone_number = :p
              AND (l.reputation_at IS NULL OR l.reputation_at <= :at)
              AND (l.reputation IS DISTINCT FROM CAST(:reputation AS text)
                   OR l.line_type IS DISTINCT FROM coalesce(CAST(:line_type AS text), l.line_type)
                   OR l.reputation_at IS NULL
                   OR l.reputation_at < CAST(:at AS timestamptz) - interval '1 hour')
            """
)
RECORD_STATUS_SQL = Sql(
    """
            INSERT INTO lines AS l (phone_number, linq_status, linq_status_at)
            VALUES (:p, :status, :at)
            ON CONFLICT (phone_number) DO UPDATE SET
                linq_status = EXCLUDED.linq_status, linq_status_at = EXCLUDED.linq_status_at,
                updated_at = now()
            WHERE l.linq_status_at IS NULL OR l.linq_status_at <= EXCLUDED.linq_status_at
            """
)


def record_reputation(
    session: Session, phone: str, reputation: str, *, at: dt.datetime, line_type: str | None = None
) -> bool:
    """Linq rated the line `reputation` as of `at`; an older report changes nothing. True if stored."""
    values = {"p": phone, "reputation": reputation, "at": at, "line_type": line_type}
    inserted = getattr(session.execute(RECORD_REPUTATION_SQL, values), "rowcount", 0)
    updated = getattr(session.execute(UPDATE_REPUTATION_SQL, values), "rowcount", 0)
    return bool(inserted or updated)


def record_status(session: Session, phone: str, status: str, *, at: dt.datetime) -> bool:
    """Linq's service status of the line (ACTIVE/FLAGGED) as of `at`; older reports lose."""
    result = session.execute(RECORD_STATUS_SQL, {"p": phone, "status": status, "at": at})
    return bool(getattr(result, "rowcount", 0))


# --------------------------------------------------------------------------- operator controls

PAUSE_LINE_SQL = Sql(
    """
            UPDATE lines SET paused_at = now(), paused_until = :until, paused_reason = :reason,
                paused_by = :by, updated_at = now()
            WHERE phone_number = :p
            """
)
RESUME_LINE_SQL = Sql(
    """
            UPDATE lines SET paused_at = NULL, paused_until = NULL, paused_reason = NULL,
                paused_by = NULL, updated_at = now()
            WHERE phone_number = :p AND paused_at IS NOT NULL
            """
)
PAUSE_ACCOUNT_SQL = Sql(
    """
            INSERT INTO account_controls AS a (id, paused_at, paused_until, paused_reason, paused_by)
            VALUES (1, now(), :until, :reason, :by)
            ON CONFLICT (id) DO UPDATE SET paused_at = now(), paused_until = EXCLUDED.paused_until,
                paused_reason = EXCLUDED.paused_reason, paused_by = EXCLUDED.paused_by,
                updated_at = now()
            """
)
RESUME_ACCOUNT_SQL = Sql(
    """
            UPDATE account_controls SET paused_at = NULL, paused_until = NULL, paused_reason = NULL,
                paused_by = NULL, updated_at = now()
            WHERE id = 1 AND paused_at IS NOT NULL
            """
)


def pause_line(
    session: Session, phone: str, *, until: dt.datetime | None, reason: str | None, by: str
) -> bool:
    """False: no such line."""
    result = session.execute(PAUSE_LINE_SQL, {"p": phone, "until": until, "reason": reason, "by": by})
    return bool(getattr(result, "rowcount", 0))


def resume_line(session: Session, phone: str) -> bool:
    """False: the line was not paused."""
    return bool(getattr(session.execute(RESUME_LINE_SQL, {"p": phone}), "rowcount", 0))


def pause_account(session: Session, *, until: dt.datetime | None, reason: str | None, by: str) -> None:
    session.execute(PAUSE_ACCOUNT_SQL, {"until": until, "reason": reason, "by": by})


def resume_account(session: Session) -> bool:
    return bool(getattr(session.execute(RESUME_ACCOUNT_SQL), "rowcount", 0))


SET_LINE_SQL = Sql(
    """
            UPDATE lines SET
                timezone = CASE WHEN :set_zone THEN CAST(:zone AS text) ELSE timezone END,
                hours_start = CASE WHEN :set_hours THEN CAST(:hours_start AS smallint) ELSE hours_start END,
                hours_end = CASE WHEN :set_hours THEN CAST(:hours_end AS smallint) ELSE hours_end END,
                pace_per_minute = CASE WHEN :set_pace THEN CAST(:pace AS integer) ELSE pace_per_minute END,
                updated_at = now()
            WHERE phone_number = :p
            """
)

UNSET = object()  # "leave as it is", beside None ("back to the default")


def set_line(
    session: Session,
    phone: str,
    *,
    zone: str | object | None = UNSET,
    hours: Hours | object | None = UNSET,
    pace: int | object | None = UNSET,
) -> bool:
    """Change a line's zone, hours or pace; None sets one back to the default. False: no line."""
    h = hours if isinstance(hours, Hours) else None
    result = session.execute(
        SET_LINE_SQL,
        {
            "p": phone,
            "set_zone": zone is not UNSET,
            "zone": zone if isinstance(zone, str) else None,
            "set_hours": hours is not UNSET,
            "hours_start": h.start if h else None,
            "hours_end": h.end if h else None,
            "set_pace": pace is not UNSET,
            "pace": pace if isinstance(pace, int) else None,
        },
    )
    return bool(getattr(result, "rowcount", 0))


ZONE_KNOWN_SQL = Sql("SELECT count(*) FROM pg_timezone_names WHERE name = :z")


def database_knows_zone(session: Reader, zone: str) -> bool:
    """PostgreSQL's zone names too: a zone only Python knows would still be a surprise later."""
    return bool(session.execute(ZONE_KNOWN_SQL, {"z": zone}).scalar_one())


# --------------------------------------------------------------------------- waking held chat-days

REARM_SQL = Sql(
    """
            UPDATE share_days d SET lease_until = now(), updated_at = now()
            FROM chats c
            WHERE c.id = d.chat_id AND (:all_lines OR c.line_phone = ANY(:lines))
              AND d.day = ANY(:days) AND d.status = 'held' AND d.lease_until > now()
              AND split_part(d.reason, ':', 1) <> 'pace'
            """
)


def rearm_held(session: Session, *, days: Iterable[dt.date], lines: Sequence[str] | None) -> int:
    """A hold lifted: its chat-days (held for any reason but pace, whose slots stand) become due
    for the next release pass, which re-checks the gate and schedules them at the line's pace."""
    result = session.execute(
        REARM_SQL,
        {"all_lines": lines is None, "lines": list(lines or []), "days": sorted(set(days))},
    )
    return int(getattr(result, "rowcount", 0))


RESPREAD_SQL = Sql(
    """
            UPDATE share_days d SET lease_until = now(), reason = 'rescheduled: the line''s pace changed',
                updated_at = now()
            FROM chats c
            WHERE c.id = d.chat_id AND c.line_phone = :line AND d.day = :day AND d.status = 'held'
              AND split_part(d.reason, ':', 1) = 'pace'
            """
)


def respread(session: Session, *, line: str, day: dt.date) -> int:
    """The line's pace changed: its slots are given up and the release pass spreads them again."""
    return int(getattr(session.execute(RESPREAD_SQL, {"line": line, "day": day}), "rowcount", 0))


def line_days_params(days: Mapping[str, dt.date]) -> dict[str, list[Any]]:
    """`{line: day}` as the two arrays `LINE_DAYS` unnests."""
    phones = sorted(days)
    return {"ld_lines": phones, "ld_days": [days[p] for p in phones]}


# Each line's own day, as a relation: JOIN it `ON ld.line_phone = c.line_phone`.
LINE_DAYS = "unnest(CAST(:ld_lines AS text[]), CAST(:ld_days AS date[])) AS ld(line_phone, day)"
