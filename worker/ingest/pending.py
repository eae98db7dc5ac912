"""Signed webhook events that name no line, kept until cardshare knows their chat.

Linq's schema lets `chat.owner_handle`, `recipient_handle` and a handle's `is_me` be null. Such
an event is applied at once when cardshare already knows the chat (its line is the chat's);
otherwise it is stored in `webhook_pending` and answered 200, and a pass run by beat (with
every recovery pass, each minute) applies it as soon as the chat turns up (the daily sync, a
`message.sent`, an import). Answering 5xx instead would have Linq retry for only ~30 minutes,
and the next sync is up to a day away (docs/decisions.md §14).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import logging
import uuid
from dataclasses import dataclass
from typing import Any

from worker.logs import event
from worker.rules.facts import ChatActivity
from worker.store.chats import record_activity
from worker.store.ingest import prune_pending, take_resolvable
from worker.store.sql import Database

log = logging.getLogger("cardshare.webhooks")

_TIMES = ("outbound_at", "inbound_at")


def to_json(activity: ChatActivity) -> str:
    """The activity without its (unknown) line, as JSON for `webhook_pending.activity`."""
    doc: dict[str, Any] = dataclasses.asdict(activity)
    doc.pop("line_phone")
    doc["chat_id"] = str(activity.chat_id)
    for key in _TIMES:
        value = doc[key]
        doc[key] = value.isoformat() if isinstance(value, dt.datetime) else None
    return json.dumps(doc)


def from_json(doc: dict[str, Any], line_phone: str) -> ChatActivity:
    kw = dict(doc)
    kw["chat_id"] = uuid.UUID(str(kw["chat_id"]))
    for key in _TIMES:
        raw = kw.get(key)
        kw[key] = dt.datetime.fromisoformat(raw) if isinstance(raw, str) else None
    return ChatActivity(line_phone=line_phone, **kw)


@dataclass
class PendingReport:
    applied: int = 0
    expired: int = 0

    def one_line(self) -> str:
        return f"pending webhook events: {self.applied} applied, {self.expired} expired"


def resolve_pending(db: Database, *, batch: int = 1000) -> PendingReport:
    """Apply every pending event whose chat is known now; drop those past their retention."""
    report = PendingReport()
    while True:
        with db.transaction() as session:
            taken = take_resolvable(session, limit=batch)
            record_activity(session, [from_json(p.activity, p.line_phone) for p in taken])
        report.applied += len(taken)
        for p in taken:
            event(log, "webhook.pending_applied", event_id=p.event_id, event_type=p.event_type)
        if len(taken) < batch:
            break
    with db.transaction() as session:
        expired = prune_pending(session)
    report.expired = len(expired)
    if expired:
        event(log, "webhook.pending_expired", logging.WARNING, count=len(expired), event_ids=expired[:20])
    return report
