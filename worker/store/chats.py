"""Chats and the lines they belong to: what is known of each chat's outbound activity.

Webhooks, the chat sync and imports all write through `record_activity`. Outbound times only
ever widen what is known, so the three can overlap and arrive in any order.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from typing import TYPE_CHECKING

from worker.rules.facts import ChatActivity
from worker.store.sql import Reader, Sql

if TYPE_CHECKING:
    from sqlalchemy.orm import Session

ENSURE_LINE_SQL = Sql("INSERT INTO lines (phone_number) VALUES (:p) ON CONFLICT DO NOTHING")


def ensure_lines(session: Reader, phones: Sequence[str]) -> None:
    if phones:
        session.execute(ENSURE_LINE_SQL, [{"p": p} for p in sorted(set(phones))])


RECORD_ACTIVITY_SQL = Sql(
    """
            INSERT INTO chats AS c (id, line_phone, service, is_group, first_outbound_at,
                                    last_outbound_at, opted_out, opted_out_at, health_status)
            VALUES (:chat_id, :line_phone, :service, coalesce(:is_group, false), :outbound_at,
                    :outbound_at, coalesce(:opted_out, false),
                    CASE WHEN :opted_out THEN now() END, :health_status)
            ON CONFLICT (id) DO UPDATE SET
                line_phone = EXCLUDED.line_phone,
                service = coalesce(:service, c.service),
                is_group = coalesce(:is_group, c.is_group),
                first_outbound_at = CASE
                    WHEN c.first_outbound_at IS NULL THEN EXCLUDED.first_outbound_at
                    WHEN EXCLUDED.first_outbound_at IS NULL THEN c.first_outbound_at
                    ELSE least(c.first_outbound_at, EXCLUDED.first_outbound_at) END,
                last_outbound_at = CASE
                    WHEN c.last_outbound_at IS NULL THEN EXCLUDED.last_outbound_at
                    WHEN EXCLUDED.last_outbound_at IS NULL THEN c.last_outbound_at
                    ELSE greatest(c.last_outbound_at, EXCLUDED.last_outbound_at) END,
                opted_out = CASE WHEN :opted_out IS NULL THEN c.opted_out
                                 WHEN NOT :opted_out AND c.opted_out_at > :inbound_at THEN c.opted_out
                                 ELSE :opted_out END,
                opted_out_at = CASE WHEN :opted_out IS NULL THEN c.opted_out_at
                                    WHEN :opted_out THEN coalesce(c.opted_out_at, now())
                                    WHEN c.opted_out_at > :inbound_at THEN c.opted_out_at END,
                -- OPTED_OUT is cleared by the recipient's next message (Linq's chat-health guide):
                -- a payload without health (2025-01-01) that clears the opt-out clears it too.
                health_status = CASE
                    WHEN :health_status IS NOT NULL THEN :health_status
                    WHEN :opted_out IS FALSE AND c.health_status = 'OPTED_OUT'
                         AND NOT coalesce(c.opted_out_at > :inbound_at, false) THEN NULL
                    ELSE c.health_status END,
                updated_at = now()
            """
)


def record_activity(session: Reader, facts: Sequence[ChatActivity]) -> None:
    """Upsert chats. Outbound times only widen [first, last]; None leaves a field as it is."""
    if not facts:
        return
    ensure_lines(session, [f.line_phone for f in facts])
    session.execute(
        RECORD_ACTIVITY_SQL,
        [
            {
                "chat_id": f.chat_id,
                "line_phone": f.line_phone,
                "service": f.service,
                "is_group": f.is_group,
                "outbound_at": f.outbound_at,
                "opted_out": f.opted_out,
                "health_status": f.health_status,
                "inbound_at": f.inbound_at,
            }
            for f in facts
        ],
    )


MARK_OPTED_OUT_SQL = Sql(
    "UPDATE chats SET opted_out = true, opted_out_at = now(), updated_at = now() WHERE id = :c"
)


def mark_opted_out(session: Session, chat_id: uuid.UUID) -> None:
    """403/2024 on a share (docs/decisions.md §6)."""
    session.execute(MARK_OPTED_OUT_SQL, {"c": chat_id})


MARK_NOT_FOUND_SQL = Sql("UPDATE chats SET not_found_at = now(), updated_at = now() WHERE id = :c")


def mark_not_found(session: Session, chat_id: uuid.UUID) -> None:
    """Linq answered 404/2001 for the chat: it is gone, stop sharing into it."""
    session.execute(MARK_NOT_FOUND_SQL, {"c": chat_id})


KNOWN_LINES_SQL = Sql("SELECT phone_number FROM lines ORDER BY 1")


def known_lines(session: Session) -> list[str]:
    return list(session.execute(KNOWN_LINES_SQL).scalars())
