"""The simulated Linq account: lines, cards, chats, contacts and the rules between them.

Plain Python with no HTTP, so the rules can be tested with an injected clock. The state is
single-threaded on purpose: the simulator app touches it only from its event loop, and every
method runs to completion without awaiting, so requests never interleave inside a rule.
"""

from __future__ import annotations

import math
import re
import time
import uuid
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

from worker.simulator.faults import FaultBook

E164 = re.compile(r"^\+[1-9]\d{1,14}$")
LINE_TYPES = ("iMessage", "RCS")
SERVICES = ("iMessage", "SMS", "RCS")
REPUTATIONS = ("HEALTHY", "AT_RISK", "CRITICAL")
LINE_STATUSES = ("ACTIVE", "FLAGGED")
HEALTHS = ("HEALTHY", "AT_RISK", "CRITICAL", "OPTED_OUT")
ACTIVATIONS = ("immediate", "on_next_read", "never")
CHAT_HEALTH_DOC = "https://docs.linqapp.com/channel/imessage/guides/chats/chat-health"
REPUTATION_DOC = "https://docs.linqapp.com/channel/imessage/guides/phone-numbers/phone-reputation"
DEFAULT_CONFIG: dict[str, float] = {
    "share_window_s": 300.0,
    "card_write_limit": 3,
    "card_write_window_s": 600.0,
    # A reputation model (0: off): a line whose accepted shares in the last 60 s pass this drops to
    # AT_RISK (or CRITICAL), as Linq weighs a line's send pace in its score.
    "at_risk_above_per_minute": 0,
    "critical_above_per_minute": 0,
}
INT_CONFIG = ("card_write_limit", "at_risk_above_per_minute", "critical_above_per_minute")

MAX_SHARE_EVENTS = 500_000

ShareOutcome = Literal["accepted", "rate_limited", "not_found", "card_inactive", "opted_out", "fault"]


class SimError(Exception):
    """A Linq API error: the app renders it as the v3 envelope (or v2 on v2 routes)."""

    def __init__(self, status: int, code: int | None, message: str, retry_after: int | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.retry_after = retry_after


def iso(ts: float) -> str:
    """Unix seconds to the ISO-8601 UTC form Linq uses (`...Z`)."""
    return datetime.fromtimestamp(ts, tz=UTC).isoformat().replace("+00:00", "Z")


def parse_iso(value: str) -> float:
    """ISO-8601 (with offset or `Z`) to unix seconds; naive values are taken as UTC."""
    parsed = datetime.fromisoformat(value)
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return parsed.timestamp()


def wait_seconds(until: float, now: float) -> int:
    """Retry-After in whole seconds: rounded up and never below 1."""
    return max(1, math.ceil(until - now))


def check_e164(phone: object) -> str:
    """Return the number, or raise the API's 400/1002."""
    if not isinstance(phone, str) or not E164.match(phone):
        raise SimError(400, 1002, f"Invalid phone number format: {phone!r}; expected E.164")
    return phone


def _pick(value: object, allowed: tuple[str, ...], what: str) -> str:
    if value not in allowed:
        raise ValueError(f"{what} must be one of {allowed}, got {value!r}")
    return str(value)


@dataclass(slots=True)
class Line:
    id: str
    phone_number: str
    line_type: str = "iMessage"
    reputation: str = "HEALTHY"
    card_activation: str = "immediate"
    status: str = "ACTIVE"  # ACTIVE or FLAGGED; only webhooks tell (GET /v3/phone_numbers does not)

    def to_json(self) -> dict[str, Any]:
        # `status` (ACTIVE/FLAGGED) is not part of Linq's phone number object: only webhooks say it.
        return {
            "id": self.id,
            "phone_number": self.phone_number,
            "reputation": {"status": self.reputation, "doc_url": REPUTATION_DOC},
            "forwarding_number": None,
            "line_type": self.line_type,
        }


@dataclass(slots=True)
class Card:
    phone_number: str
    first_name: str
    last_name: str | None = None
    image_url: str | None = None
    is_active: bool = True

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"phone_number": self.phone_number, "first_name": self.first_name}
        if self.last_name is not None:
            out["last_name"] = self.last_name
        if self.image_url is not None:
            out["image_url"] = self.image_url
        out["is_active"] = self.is_active
        return out


@dataclass(slots=True)
class Message:
    id: str
    is_from_me: bool
    sent_at: float
    service: str | None
    text: str
    reactions: tuple[str, ...] = ()  # tapback types on the text part ("love", "like", "custom")


@dataclass(slots=True)
class Chat:
    id: str
    line: str
    to: str
    service: str | None
    is_group: bool
    health: str
    created_at: float
    me_handle_id: str
    other_handle_id: str
    messages: list[Message] = field(default_factory=list)  # newest first
    # The recipient opted out: shares answer 403/2024, whatever `health` says (Linq's block can be
    # wider than the health mark, docs/linq-contract.md §6.2).
    opted_out: bool = False

    @property
    def has_outbound(self) -> bool:
        return any(m.is_from_me for m in self.messages)


@dataclass(slots=True)
class ShareEvent:
    chat_id: str
    at: float
    outcome: ShareOutcome
    status: int
    retry_after: int | None
    trace_id: str
    effective: bool = False
    responded: bool = False
    line: str | None = None  # the chat's line, when the simulator knows the chat

    def to_json(self) -> dict[str, Any]:
        return {
            "chat_id": self.chat_id,
            "line": self.line,
            "at": self.at,
            "outcome": self.outcome,
            "status": self.status,
            "retry_after": self.retry_after,
            "trace_id": self.trace_id,
            "effective": self.effective,
            "responded": self.responded,
        }


def share_error(event: ShareEvent) -> SimError | None:
    """The API error a refused share answers with, or None when it was accepted."""
    if event.outcome == "not_found":
        return SimError(404, 2001, "Chat not found")
    if event.outcome == "card_inactive":
        return SimError(404, 2012, "Contact card not found")
    if event.outcome == "opted_out":
        return SimError(403, 2024, "Recipient has opted out of messages from this number")
    if event.outcome == "rate_limited":
        return SimError(429, 1007, "Contact card was shared with this chat recently", event.retry_after)
    return None


class SimState:
    """Everything the simulated account knows; each public method is one API rule."""

    def __init__(self, clock: Callable[[], float] = time.time, seed: int = 0) -> None:
        self.clock = clock
        self.faults = FaultBook(seed)
        self.config: dict[str, float] = dict(DEFAULT_CONFIG)
        self._seed = seed
        self.reset()

    # ---- admin side -------------------------------------------------------------------
    def reset(self) -> None:
        """Forget everything and restore the default config."""
        self.config = dict(DEFAULT_CONFIG)
        self.lines: dict[str, Line] = {}
        self.cards: dict[str, Card] = {}
        self.chats: dict[str, Chat] = {}
        self._chat_order: list[str] = []
        self._chats_by_line: dict[str, list[str]] = {}
        self.contacts: list[dict[str, Any]] = []
        # Share requests being handled right now, by trace id (drills kill workers mid-call).
        self.inflight: dict[str, dict[str, Any]] = {}
        self._pending_activation: set[str] = set()
        self._writes: dict[str, deque[float]] = {}
        self._last_share: dict[str, float] = {}
        self.share_counts: dict[str, int] = {}
        # Bounded so a long demo at hundreds of shares a second cannot eat the box; counts stay exact.
        self.share_events: deque[ShareEvent] = deque(maxlen=MAX_SHARE_EVENTS)
        self.request_counts: dict[str, int] = {}
        self._handle_seq = 0
        self.faults.reset(self._seed)
        # Events the simulator sends by itself (line status, card changes), to its subscription.
        self.webhook_target: dict[str, str] | None = None
        self.outbox: list[dict[str, Any]] = []
        self.emitted: deque[dict[str, Any]] = deque(maxlen=10_000)
        self._recent_by_line: dict[str, deque[float]] = {}

    def configure(self, **values: object) -> dict[str, float]:
        """Change rule parameters (`share_window_s`, `card_write_limit`, `card_write_window_s`)."""
        for key, value in values.items():
            if key not in DEFAULT_CONFIG:
                raise ValueError(f"unknown config key {key!r}")
            if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
                raise ValueError(f"{key} must be a positive number")
            if value == 0 and key not in ("at_risk_above_per_minute", "critical_above_per_minute"):
                raise ValueError(f"{key} must be a positive number")
            self.config[key] = int(value) if key in INT_CONFIG else float(value)
        return dict(self.config)

    def add_line(
        self,
        phone_number: str,
        line_type: str = "iMessage",
        reputation: str = "HEALTHY",
        card_activation: str = "immediate",
    ) -> Line:
        """Create or update one of the account's lines."""
        if not E164.match(phone_number):
            raise ValueError(f"line phone_number must be E.164, got {phone_number!r}")
        existing = self.lines.get(phone_number)
        line = Line(
            id=existing.id if existing else str(uuid.uuid4()),
            phone_number=phone_number,
            line_type=_pick(line_type, LINE_TYPES, "line_type"),
            reputation=_pick(reputation, REPUTATIONS, "reputation"),
            card_activation=_pick(card_activation, ACTIVATIONS, "card_activation"),
        )
        self.lines[phone_number] = line
        return line

    def set_line_state(
        self, phone_number: str, *, reputation: str | None = None, status: str | None = None
    ) -> Line:
        """Linq re-scores or flags a line: the change, and its `phone_number.status_updated`."""
        line = self.lines.get(phone_number)
        if line is None:
            raise ValueError(f"unknown line {phone_number!r}")
        before = (line.reputation, line.status)
        if reputation is not None:
            line.reputation = _pick(reputation, REPUTATIONS, "reputation")
        if status is not None:
            line.status = _pick(status, LINE_STATUSES, "status")
        if (line.reputation, line.status) != before:
            self.outbox.append(
                {
                    "event_type": "phone_number.status_updated",
                    "line": phone_number,
                    "reputation": line.reputation,
                    "line_status": line.status,
                    "previous_reputation": before[0],
                    "previous_status": before[1],
                    "changed_at": self.clock(),
                }
            )
        return line

    def delete_card(self, phone_number: str) -> None:
        """The card is removed (Linq's dashboard): `contact_card.deleted`."""
        if self.cards.pop(phone_number, None) is None:
            raise ValueError(f"no card on {phone_number!r}")
        self._card_event("contact_card.deleted", phone_number)

    def _card_event(self, event_type: str, phone_number: str) -> None:
        self.outbox.append({"event_type": event_type, "line": phone_number, "changed_at": self.clock()})

    def set_chat_health(self, chat_id: str, health: str) -> Chat:
        chat = self.get_chat(chat_id)
        chat.health = _pick(health, HEALTHS, "health")
        return chat

    def put_card(self, card: Card) -> None:
        """Admin write: bypasses the write budget and the activation setting."""
        if card.phone_number not in self.lines:
            self.add_line(card.phone_number)
        self.cards[card.phone_number] = card
        self._pending_activation.discard(card.phone_number)

    def add_chats(self, specs: Iterable[Mapping[str, Any]]) -> int:
        """Add chats in bulk; all are validated before any is stored, so a bad one adds none."""
        now = self.clock()
        built = [self._build_chat(spec, now) for spec in specs]
        ids = [c.id for c in built]
        if len(set(ids)) != len(ids) or any(i in self.chats for i in ids):
            raise ValueError("chat ids must be unique")
        for chat in built:
            if chat.line not in self.lines:
                self.add_line(chat.line)
            self.chats[chat.id] = chat
            self._chat_order.append(chat.id)
            self._chats_by_line.setdefault(chat.line, []).append(chat.id)
        return len(built)

    def _build_chat(self, spec: Mapping[str, Any], now: float) -> Chat:
        line = spec.get("line")
        if not isinstance(line, str) or not E164.match(line):
            raise ValueError(f"chat line must be E.164, got {line!r}")
        service = spec.get("service", "iMessage")
        if service is not None:
            _pick(service, SERVICES, "service")
        chat_id = str(spec.get("id") or uuid.uuid4())
        created = spec.get("created_at")
        messages = [self._build_message(m, service) for m in spec.get("messages") or []]
        messages.sort(key=lambda m: m.sent_at, reverse=True)
        return Chat(
            id=chat_id,
            line=line,
            to=str(spec.get("to") or self._next_handle()),
            service=service,
            is_group=bool(spec.get("is_group", False)),
            health=_pick(spec.get("health", "HEALTHY"), HEALTHS, "health"),
            created_at=parse_iso(created) if isinstance(created, str) else now,
            me_handle_id=str(uuid.uuid4()),
            other_handle_id=str(uuid.uuid4()),
            messages=messages,
            opted_out=bool(spec.get("opted_out", False)),
        )

    def _build_message(self, spec: Mapping[str, Any], chat_service: str | None) -> Message:
        sent_at = spec.get("sent_at")
        if not isinstance(sent_at, str):
            raise ValueError("message sent_at must be an ISO-8601 string")
        service = spec.get("service", chat_service)
        if service is not None:
            _pick(service, SERVICES, "message service")
        return Message(
            id=str(spec.get("id") or uuid.uuid4()),
            is_from_me=bool(spec.get("is_from_me", True)),
            sent_at=parse_iso(sent_at),
            service=service,
            text=str(spec.get("text", "Hello from the simulator")),
            reactions=tuple(str(r) for r in spec.get("reactions") or ()),
        )

    def _next_handle(self) -> str:
        self._handle_seq += 1
        return f"+1555{self._handle_seq:07d}"

    def add_contacts(self, count: int = 0, contacts: Iterable[Mapping[str, Any]] = ()) -> int:
        """Generate `count` v2 CRM contacts and/or store the given ones verbatim."""
        added = [dict(c) for c in contacts]
        start = len(self.contacts)
        stamp = datetime.fromtimestamp(self.clock(), tz=UTC)
        added += [_fake_contact(start + len(added) + i + 1, stamp) for i in range(count)]
        self.contacts.extend(added)
        return len(added)

    # ---- phone numbers and cards --------------------------------------------------------
    def list_lines(self) -> list[dict[str, Any]]:
        return [line.to_json() for line in self.lines.values()]

    def list_cards(self, phone_number: str | None = None) -> list[dict[str, Any]]:
        """GET /v3/contact_card. Reading is what applies `on_next_read` cards, so it runs first."""
        if phone_number is not None:
            check_e164(phone_number)
        for phone in self._pending_activation:
            card = self.cards.get(phone)
            if card is not None:
                card.is_active = True
        self._pending_activation.clear()
        if phone_number is None:
            return [card.to_json() for card in self.cards.values()]
        card = self.cards.get(phone_number)
        if card is None:
            raise SimError(404, 2012, "Contact card not found")
        return [card.to_json()]

    def create_card(
        self, phone_number: str, first_name: str, last_name: str | None = None, image_url: str | None = None
    ) -> dict[str, Any]:
        """POST /v3/contact_card: one-time setup; refuses to replace an active card."""
        line = self.lines.get(phone_number)
        if line is None:
            raise SimError(403, 2005, "Phone number does not belong to this partner")
        self._spend_write(phone_number)
        existing = self.cards.get(phone_number)
        if existing is not None and existing.is_active:
            raise SimError(409, 2014, "Contact card already exists; use PATCH to update it")
        card = Card(phone_number, first_name, last_name, image_url, is_active=False)
        self.cards[phone_number] = card
        self._activate(card, line)
        self._card_event("contact_card.created", phone_number)
        return card.to_json()

    def update_card(self, phone_number: str, changes: Mapping[str, str | None]) -> dict[str, Any]:
        """PATCH /v3/contact_card: merge the given fields into the existing card."""
        self._spend_write(phone_number)
        card = self.cards.get(phone_number)
        # Linq's guide: "an active card must already exist"; an inactive one is not updated.
        if card is None or not card.is_active:
            raise SimError(404, 2012, "Contact card not found")
        for key, value in changes.items():
            setattr(card, key, value)
        self._card_event("contact_card.updated", phone_number)
        return card.to_json()

    def _activate(self, card: Card, line: Line) -> None:
        card.is_active = line.card_activation == "immediate"
        if line.card_activation == "on_next_read":
            self._pending_activation.add(card.phone_number)
        else:
            self._pending_activation.discard(card.phone_number)

    def _spend_write(self, phone_number: str) -> None:
        """POST and PATCH share one sliding-window budget per number; a refused write spends nothing."""
        now = self.clock()
        window = self.config["card_write_window_s"]
        writes = self._writes.setdefault(phone_number, deque())
        while writes and writes[0] <= now - window:
            writes.popleft()
        if len(writes) >= self.config["card_write_limit"]:
            wait = wait_seconds(writes[0] + window, now)
            raise SimError(429, 1007, "Contact card write limit reached for this number", retry_after=wait)
        writes.append(now)

    # ---- sharing -----------------------------------------------------------------------
    def share(self, chat_id: str, trace_id: str) -> ShareEvent:
        """POST /v3/chats/{id}/share_contact_card. Records and returns the attempt's event;
        `share_error(event)` gives the API error for a refusal."""
        now = self.clock()
        chat = self.chats.get(chat_id)
        if chat is None:
            return self._record(ShareEvent(chat_id, now, "not_found", 404, None, trace_id))
        card = self.cards.get(chat.line)
        if card is None or not card.is_active:
            return self._record(ShareEvent(chat_id, now, "card_inactive", 404, None, trace_id))
        if chat.opted_out or chat.health == "OPTED_OUT":
            return self._record(ShareEvent(chat_id, now, "opted_out", 403, None, trace_id))
        last = self._last_share.get(chat_id)
        window = self.config["share_window_s"]
        if last is not None and now - last < window:
            wait = wait_seconds(last + window, now)
            return self._record(ShareEvent(chat_id, now, "rate_limited", 429, wait, trace_id))
        self._last_share[chat_id] = now
        self.share_counts[chat_id] = self.share_counts.get(chat_id, 0) + 1
        # Linq answers 2xx for shares that do nothing (SMS/RCS, no outbound yet); mark them.
        effective = chat.service == "iMessage" and chat.has_outbound and self._line_type(chat) == "iMessage"
        self._weigh_pace(chat.line, now)
        return self._record(
            ShareEvent(chat_id, now, "accepted", 204, None, trace_id, effective=effective, line=chat.line)
        )

    def _weigh_pace(self, line: str, now: float) -> None:
        """The reputation model, when configured: a line sharing faster than the thresholds in
        any 60 s is re-scored, and says so by webhook."""
        at_risk, critical = self.config["at_risk_above_per_minute"], self.config["critical_above_per_minute"]
        if not at_risk and not critical:
            return
        recent = self._recent_by_line.setdefault(line, deque())
        recent.append(now)
        while recent and recent[0] <= now - 60.0:
            recent.popleft()
        state = self.lines.get(line)
        if state is None:
            return
        if critical and len(recent) > critical and state.reputation != "CRITICAL":
            self.set_line_state(line, reputation="CRITICAL")
        elif at_risk and len(recent) > at_risk and state.reputation == "HEALTHY":
            self.set_line_state(line, reputation="AT_RISK")

    def record_share_fault(
        self, chat_id: str, status: int, retry_after: int | None, trace_id: str
    ) -> ShareEvent:
        """A share answered by an injected fault: state untouched, but the attempt is visible."""
        chat = self.chats.get(chat_id)
        return self._record(
            ShareEvent(
                chat_id,
                self.clock(),
                "fault",
                status,
                retry_after,
                trace_id,
                line=chat.line if chat else None,
            )
        )

    def _record(self, event: ShareEvent) -> ShareEvent:
        self.share_events.append(event)
        return event

    def pace_json(self, window_s: float = 60.0) -> dict[str, Any]:
        """Per line, the simulator's own count of accepted shares: in total, and the most in any
        `window_s` (a sliding window over the accept times), with when that window started."""
        by_line: dict[str, list[float]] = {}
        for e in self.share_events:
            if e.outcome == "accepted" and e.line is not None:
                by_line.setdefault(e.line, []).append(e.at)
        out: dict[str, Any] = {}
        for line, times in by_line.items():
            times.sort()
            best, best_at, lo = 0, times[0], 0
            for hi, t in enumerate(times):
                while times[lo] <= t - window_s:
                    lo += 1
                if hi - lo + 1 > best:
                    best, best_at = hi - lo + 1, times[lo]
            out[line] = {
                "accepted": len(times),
                "max_in_window": best,
                "max_window_start": best_at,
                "first_at": times[0],
                "last_at": times[-1],
            }
        return {"window_s": window_s, "lines": out, "events_kept": len(self.share_events)}

    def shares_json(self, events: bool = False) -> dict[str, Any]:
        out: dict[str, Any] = {
            "total_accepted": sum(self.share_counts.values()),
            "per_chat": dict(self.share_counts),
        }
        if events:
            out["events"] = [e.to_json() for e in self.share_events]
        return out

    # ---- chats and messages --------------------------------------------------------------
    def list_chats(
        self, from_: str | None, to: str | None, limit: int, cursor: int
    ) -> tuple[list[dict[str, Any]], str | None]:
        """GET /v3/chats: creation order, offset cursor."""
        ids = self._chat_order if from_ is None else self._chats_by_line.get(from_, [])
        if to is not None:
            ids = [i for i in ids if self.chats[i].to == to]
        page = ids[cursor : cursor + limit]
        more = cursor + limit < len(ids)
        return [self.chat_json(self.chats[i]) for i in page], (str(cursor + limit) if more else None)

    def get_chat(self, chat_id: str) -> Chat:
        chat = self.chats.get(chat_id)
        if chat is None:
            raise SimError(404, 2001, "Chat not found")
        return chat

    def _line_type(self, chat: Chat) -> str:
        line = self.lines.get(chat.line)
        return line.line_type if line else "iMessage"

    def chat_json(self, chat: Chat) -> dict[str, Any]:
        created = iso(chat.created_at)
        updated = iso(max([chat.created_at] + [m.sent_at for m in chat.messages[:1]]))
        service = chat.service or "iMessage"  # a handle's service may not be null
        me = _handle(chat.me_handle_id, chat.line, created, service, True)
        me["line_type"] = self._line_type(chat)
        return {
            "id": chat.id,
            "created_at": created,
            "updated_at": updated,
            "display_name": chat.to,
            "is_group": chat.is_group,
            "is_archived": False,
            "service": chat.service,
            "group_chat_icon": None,
            "health_status": {"status": chat.health, "doc_url": CHAT_HEALTH_DOC, "updated_at": created},
            "handles": [me, _handle(chat.other_handle_id, chat.to, created, service, False)],
        }

    def list_messages(self, chat_id: str, limit: int, cursor: int) -> tuple[list[dict[str, Any]], str | None]:
        """GET /v3/chats/{id}/messages: newest first, offset cursor."""
        chat = self.get_chat(chat_id)
        page = chat.messages[cursor : cursor + limit]
        more = cursor + limit < len(chat.messages)
        return [_message_json(chat, m) for m in page], (str(cursor + limit) if more else None)

    # ---- v2 contacts ---------------------------------------------------------------------
    def list_contacts(self, page: int, per_page: int) -> dict[str, Any]:
        total = len(self.contacts)
        start = (page - 1) * per_page
        return {
            "contacts": self.contacts[start : start + per_page],
            "pagination": {
                "current_page": page,
                "per_page": per_page,
                "total_pages": math.ceil(total / per_page),
                "total_count": total,
            },
        }

    # ---- bookkeeping -----------------------------------------------------------------------
    def count_request(self, key: str) -> None:
        self.request_counts[key] = self.request_counts.get(key, 0) + 1


def _handle(handle_id: str, handle: str, joined: str, service: str, is_me: bool) -> dict[str, Any]:
    return {
        "id": handle_id,
        "handle": handle,
        "joined_at": joined,
        "service": service,
        "is_me": is_me,
        "left_at": None,
        "status": "active",
    }


def _message_json(chat: Chat, msg: Message) -> dict[str, Any]:
    sent = iso(msg.sent_at)
    return {
        "id": msg.id,
        "chat_id": chat.id,
        "created_at": sent,
        "updated_at": sent,
        "sent_at": sent,
        "delivered_at": None,
        "read_at": None,
        "delivery_status": "sent" if msg.is_from_me else "received",
        "is_delivered": False,
        "is_read": False,
        "is_from_me": msg.is_from_me,
        "from": chat.line if msg.is_from_me else chat.to,
        "service": msg.service,
        # TextPartResponse: `reactions` is required and nullable (null when there are none).
        "parts": [{"type": "text", "value": msg.text, "reactions": _reactions(msg, chat) or None}],
    }


def _reactions(msg: Message, chat: Chat) -> list[dict[str, Any]]:
    handle = {"id": chat.other_handle_id, "handle": chat.to, "service": chat.service, "is_me": False,
              "status": "active", "joined_at": None, "left_at": None}  # fmt: skip
    return [
        {"is_me": False, "handle": handle, "type": kind, "custom_emoji": "🚀" if kind == "custom" else None}
        for kind in msg.reactions
    ]


_FIRST = ("Ada", "Grace", "Alan", "Edsger", "Barbara", "Donald", "Frances", "Ken")
_LAST = ("Lovelace", "Hopper", "Turing", "Dijkstra", "Liskov", "Knuth", "Allen", "Thompson")


def _fake_contact(n: int, stamp: datetime) -> dict[str, Any]:
    first, last = _FIRST[n % len(_FIRST)], _LAST[(n // len(_FIRST)) % len(_LAST)]
    when = (stamp - timedelta(minutes=n)).isoformat()
    return {
        "id": n,
        "first_name": first,
        "last_name": last,
        "full_name": f"{first} {last}",
        "email": f"{first.lower()}.{last.lower()}{n}@example.com",
        "phone_number": f"+1555{n:07d}",
        "company": "Example Co",
        "title": "Customer",
        "location": "Springfield",
        "image_url": None,
        "created_at": when,
        "updated_at": when,
        "contact_owner": {
            "id": 1,
            "email": "owner@example.com",
            "first_name": "Olive",
            "last_name": "Owner",
            "name": "Olive Owner",
        },
    }
