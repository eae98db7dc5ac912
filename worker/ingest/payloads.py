"""Linq's JSON (webhook events and chat objects) turned into `ChatActivity`. Pure: no I/O, no clock.

The webhook receiver and the chat sync both go through here, so a chat means the same thing
whichever way it arrived (docs/linq-contract.md §6, §7.5-§7.8).
"""

from __future__ import annotations

import datetime as dt
import json
import re
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from worker.rules import bounds
from worker.rules.facts import E164_PATTERN, ChatActivity

SERVICES = ("iMessage", "SMS", "RCS")
HANDLED_EVENTS = ("message.sent", "message.received", "chat.created")
MAX_ID_LENGTH = 128  # webhook_events.event_id
E164 = re.compile(E164_PATTERN)
UNKNOWN_LINE = ""  # ChatActivity.line_phone of an event that names no line: resolved from the chat

# Linq's opt-out rule (docs/linq-contract.md §6.2): one of these as the whole trimmed message, case-sensitive,
# or any spelling of "opt out" (case, spaces and hyphens do not matter).
OPT_OUT_WORDS = frozenset({"STOP", "UNSUBSCRIBE", "OPTOUT", "CANCEL", "END", "QUIT"})
_OPT_OUT_PHRASE = re.compile(r"opt[\s-]*out", re.IGNORECASE)


class MalformedPayload(ValueError):
    """A payload cardshare cannot use; the message says which field and why, in one line."""


class _NoChat(Exception):
    """A 2025-01-01 message event without `chat_id`, which that schema allows: no fact to record."""


@dataclass(frozen=True)
class ParsedEvent:
    event_id: str
    event_type: str
    version: str | None
    activity: ChatActivity | None  # None: an event type cardshare does not act on
    # The event names no line (Linq's schema lets the handles be null): `activity.line_phone` is
    # UNKNOWN_LINE, and the receiver takes the line from the chat cardshare already knows.
    line_unknown: bool = False
    notes: tuple[str, ...] = ()  # values clamped on the way in (a far-future time), for the log


MAX_JSON_DEPTH = 64  # Linq's events nest about 6 deep; deeper is not an event


def parse_event(body: bytes, *, webhook_id: str | None = None, now: dt.datetime | None = None) -> ParsedEvent:
    """A webhook body (either payload version) to the one fact it carries about a chat.

    `now` is the receipt time: a timestamp after it is clamped to it, one before 2000 is refused.
    """
    now = now or dt.datetime.now(dt.UTC)
    if too_deep(body, MAX_JSON_DEPTH):
        raise MalformedPayload(f"body nests deeper than {MAX_JSON_DEPTH} levels")
    try:
        doc = json.loads(body)
    except (ValueError, RecursionError):
        raise MalformedPayload("body is not JSON") from None
    if not isinstance(doc, dict):
        raise MalformedPayload("body is not a JSON object")
    event_type = doc.get("event_type")
    if not isinstance(event_type, str) or not event_type:
        raise MalformedPayload("event_type is missing")
    event_type = bounds.clean_text(event_type, 64) or "?"
    event_id = doc.get("event_id") or webhook_id
    if not isinstance(event_id, str) or not event_id.strip():
        raise MalformedPayload("event_id is missing (and no webhook-id header)")
    if len(event_id) > MAX_ID_LENGTH:
        raise MalformedPayload(f"event_id is longer than {MAX_ID_LENGTH} characters")
    if bounds.clean_text(event_id, MAX_ID_LENGTH) != event_id:
        raise MalformedPayload("event_id has control characters or surrounding spaces")
    version = doc.get("webhook_version")
    version = bounds.clean_text(version, 32) if isinstance(version, str) else None
    if event_type not in HANDLED_EVENTS:
        return ParsedEvent(event_id, event_type, version, None)
    data = doc.get("data")
    if not isinstance(data, dict):
        raise MalformedPayload(f"{event_type}: data is not an object")
    clock = _Clock(now)
    if event_type == "chat.created":
        nested = data.get("chat")
        activity = activity_from_chat(
            nested if isinstance(nested, dict) else data, prefix="data.", line=UNKNOWN_LINE
        )
    else:
        created_at = clock.check(_time(doc.get("created_at"), "created_at"), "created_at")
        try:
            activity = activity_from_message(event_type, data, created_at=created_at, clock=clock)
        except _NoChat:
            # Knowingly ignored (200): there is no chat to attach anything to.
            return ParsedEvent(event_id, event_type, version, None, notes=("no chat_id: nothing to record",))
    return ParsedEvent(
        event_id,
        event_type,
        version,
        activity,
        line_unknown=activity.line_phone == UNKNOWN_LINE,
        notes=tuple(clock.notes),
    )


class _Clock:
    """Range-checks every timestamp of one event against its receipt time (`bounds.timestamp`)."""

    def __init__(self, now: dt.datetime) -> None:
        self.now = now
        self.notes: list[str] = []

    def check(self, value: dt.datetime | None, field: str) -> dt.datetime | None:
        checked, note = bounds.timestamp(value, now=self.now)
        if note is None:
            return checked
        if checked is None:
            raise MalformedPayload(f"{field} {note}")
        self.notes.append(f"{field} {note}")
        return checked


def too_deep(body: bytes, limit: int) -> bool:
    """Deeper than `limit` brackets anywhere? A cheap scan before json.loads, whose recursion
    a few thousand brackets would exhaust (brackets inside strings count too: harmless, since
    only a pathological body has that many)."""
    depth = 0
    for byte in body:
        if byte in (0x5B, 0x7B):  # [ {
            depth += 1
            if depth > limit:
                return True
        elif byte in (0x5D, 0x7D):
            depth -= 1
    return False


def activity_from_message(
    event_type: str,
    data: Mapping[str, Any],
    *,
    created_at: dt.datetime | None,
    clock: _Clock | None = None,
) -> ChatActivity:
    """`message.sent` / `message.received` data, 2026-02-03 (`direction`, `chat{}`) or 2025-01-01
    (`is_from_me`, `chat_id`). Outbound marks activity; inbound clears an opt-out unless the
    message is itself an opt-out."""
    if "direction" in data or isinstance(data.get("chat"), dict):
        chat = data.get("chat")
        if not isinstance(chat, dict):
            raise MalformedPayload(f"{event_type}: data.chat is not an object")
        chat_id = _uuid(chat.get("id"), "data.chat.id")
        direction = data.get("direction")
        if direction not in ("outbound", "inbound", None):
            raise MalformedPayload(f"{event_type}: data.direction {direction!r} is not outbound or inbound")
        outbound = direction == "outbound" if direction is not None else event_type == "message.sent"
        line = _handle(chat.get("owner_handle")) or (_handle(data.get("sender_handle")) if outbound else None)
        is_group = _flag(chat.get("is_group"), "data.chat.is_group")
        health = _health(chat.get("health_status"))
        when = _time(data.get("sent_at"), "data.sent_at")
        parts = data.get("parts")
        if clock is not None:
            when = clock.check(when, "data.sent_at")
    else:
        if data.get("chat_id") is None:
            raise _NoChat
        chat_id = _uuid(data.get("chat_id"), "data.chat_id")
        is_from_me = data.get("is_from_me")
        if is_from_me is not None and not isinstance(is_from_me, bool):
            raise MalformedPayload(f"{event_type}: data.is_from_me is not true or false")
        outbound = is_from_me if is_from_me is not None else event_type == "message.sent"
        if outbound:
            line = _handle(data.get("from_handle")) or _phone(data.get("from"))
        else:
            line = _handle(data.get("recipient_handle")) or _phone(data.get("recipient_phone"))
        is_group = _flag(data.get("is_group"), "data.is_group")
        health = None  # 2025-01-01 carries no chat health
        nested = data.get("message")
        message: Mapping[str, Any] = nested if isinstance(nested, dict) else {}
        when = _time(message.get("sent_at"), "data.message.sent_at")
        if clock is not None:
            when = clock.check(when, "data.message.sent_at")
        if not outbound:
            received = _time(data.get("received_at"), "data.received_at")
            if clock is not None:
                received = clock.check(received, "data.received_at")
            when = received or when
        parts = message.get("parts")
    if line is None:
        # Linq's schema lets these handles be null: the receiver takes the line from the chat
        # cardshare already knows, or keeps the event until it does (docs/decisions.md §14).
        line = UNKNOWN_LINE
    when = when or created_at
    service = _service(data.get("service"))
    if outbound:
        return ChatActivity(
            chat_id,
            line,
            service=service,
            is_group=is_group,
            outbound_at=when,
            opted_out=_opted_out(health, is_group),
            health_status=health,
        )
    # Group threads are never marked or blocked (docs/linq-contract.md §6.2): leave their flag alone.
    opted_out: bool | None = None
    if not is_group:
        opted_out = health == "OPTED_OUT" or is_opt_out_message(parts)
    return ChatActivity(
        chat_id,
        line,
        service=service,
        is_group=is_group,
        opted_out=opted_out,
        health_status=health,
        inbound_at=when,
    )


def activity_from_chat(chat: Mapping[str, Any], *, line: str | None = None, prefix: str = "") -> ChatActivity:
    """A Chat object (GET /v3/chats, `chat.created`). The sending line is the `is_me` handle;
    `line` is the fallback (the line a chat list was asked for)."""
    chat_id = _uuid(chat.get("id") or chat.get("chat_id"), f"{prefix}id")
    handles = chat.get("handles")
    me = None
    if isinstance(handles, list):
        me = next((h for h in handles if isinstance(h, dict) and h.get("is_me") is True), None)
    found = _handle(me) or _handle(chat.get("owner_handle")) or line
    if found is None:
        raise MalformedPayload(f"chat {chat_id}: no is_me handle with an E.164 number names its line")
    is_group = _flag(chat.get("is_group"), f"{prefix}is_group")
    health = _health(chat.get("health_status"))
    return ChatActivity(
        chat_id,
        found,
        service=_service(chat.get("service")),
        is_group=is_group,
        opted_out=_opted_out(health, is_group),
        health_status=health,
    )


def is_opt_out_message(parts: object) -> bool:
    """Is the message text, as a whole, one of Linq's opt-out keywords?"""
    if not isinstance(parts, list):
        return False
    texts = [p.get("value") for p in parts if isinstance(p, dict) and p.get("type") == "text"]
    whole = " ".join(t for t in texts if isinstance(t, str)).strip()
    return whole in OPT_OUT_WORDS or bool(_OPT_OUT_PHRASE.fullmatch(whole))


def parse_time(raw: str) -> dt.datetime:
    """ISO-8601 with `Z` or an offset; naive values are taken as UTC (Linq always writes `Z`)."""
    value = dt.datetime.fromisoformat(raw.strip())
    return value if value.tzinfo is not None else value.replace(tzinfo=dt.UTC)


# ---- field helpers: each names the field it rejects


def _opted_out(health: str | None, is_group: bool | None) -> bool | None:
    # OPTED_OUT may be skipped early (docs/linq-contract.md §6.2); any other status says nothing:
    # Linq's block can be wider than the mark, so only a 403/2024 or an inbound message changes
    # the flag otherwise.
    return True if health == "OPTED_OUT" and not is_group else None


def _uuid(value: object, field: str) -> uuid.UUID:
    if not isinstance(value, str) or not value:
        raise MalformedPayload(f"{field} is missing")
    try:
        return uuid.UUID(value)
    except ValueError:
        raise MalformedPayload(f"{field} {value[:60]!r} is not a UUID") from None


def _phone(value: object) -> str | None:
    return value if isinstance(value, str) and E164.fullmatch(value) else None


def _handle(value: object) -> str | None:
    return _phone(value.get("handle")) if isinstance(value, dict) else None


def _flag(value: object, field: str) -> bool | None:
    if value is None or isinstance(value, bool):
        return value
    raise MalformedPayload(f"{field} is not true or false")


def _service(value: object) -> str | None:
    # A service Linq adds later is not one we share into: store nothing rather than fail.
    return value if isinstance(value, str) and value in SERVICES else None


def _health(value: object) -> str | None:
    status = value.get("status") if isinstance(value, dict) else None
    return status if isinstance(status, str) and len(status) <= 16 and status.isprintable() else None


def _time(value: object, field: str) -> dt.datetime | None:
    if value is None:
        return None
    if not isinstance(value, str):
        raise MalformedPayload(f"{field} is not a timestamp string")
    try:
        return parse_time(value)
    except ValueError:
        raise MalformedPayload(f"{field} {value[:40]!r} is not an ISO-8601 timestamp") from None


def newest_outbound(
    messages: Iterable[Mapping[str, Any]], *, now: dt.datetime | None = None
) -> dt.datetime | None:
    """The latest outbound message time among Message objects (GET /v3/chats/{id}/messages).

    A failed send never reached the customer, so it is not outbound activity. Times before 2000
    are ignored and times after `now` taken as `now` (`bounds.timestamp`).
    """
    now = now or dt.datetime.now(dt.UTC)
    times: list[dt.datetime] = []
    for message in messages:
        if message.get("is_from_me") is not True or message.get("delivery_status") == "failed":
            continue
        raw = message.get("sent_at") or message.get("created_at")
        if isinstance(raw, str):
            try:
                checked, _ = bounds.timestamp(parse_time(raw), now=now)
            except ValueError:
                continue
            if checked is not None:
                times.append(checked)
    return max(times, default=None)
