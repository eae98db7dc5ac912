"""The simulator as Linq's webhook sender: events in both payload versions, signed as Linq signs
them (Standard Webhooks headers plus the legacy `X-Webhook-*` set), POSTed to a URL.

`build_event` and `signed_headers` are plain functions so tests can sign bodies themselves;
`deliver` is what `POST /_sim/webhooks/deliver` runs.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import hashlib
import hmac
import json
import time
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import httpx
from standardwebhooks import Webhook

from worker.simulator.state import CHAT_HEALTH_DOC, HEALTHS, SERVICES, Message, SimState, iso, parse_iso

VERSIONS = ("2025-01-01", "2026-02-03")
MESSAGE_EVENTS = ("message.sent", "message.received")
# Message status events: the message's own shape plus when it changed (docs/linq-contract.md §7).
STATUS_EVENTS = ("message.delivered", "message.read")
# Fields Linq's schema allows to be null that a delivery can be asked to null (`nulls`):
# each is nulled wherever it appears in the event.
NULLABLE = (
    "owner_handle",
    "sender_handle",
    "from_handle",
    "recipient_handle",
    "recipient_phone",
    "is_me",
    "service",
    "sent_at",
    "health_status",
    "reactions",
)
PARTNER_ID = "partner_sim_001"
# Events about lines and the account, shaped as linq-python 0.65 types them.
ACCOUNT_EVENTS = (
    "phone_number.status_updated",
    "contact_card.created",
    "contact_card.updated",
    "contact_card.deleted",
    "api_token.expiry_scheduled",
    "api_token.expired",
    "webhook_subscription.disabled",
    "webhook_subscription.enabled",
)


@dataclass(frozen=True)
class EventSpec:
    """What one delivery says. Unknown chats are described by the fields given here."""

    event_type: str = "message.sent"
    version: str = "2026-02-03"
    chat_id: str = ""
    line: str = "+12223334444"
    to: str = "+15556667777"
    service: str = "iMessage"
    is_group: bool = False
    health: str = "HEALTHY"
    sent_at: float = 0.0
    text: str = "Thanks, we got your order."
    event_id: str = ""
    nulls: tuple[str, ...] = ()  # fields of NULLABLE to send as null
    reactions: tuple[str, ...] = ()  # reaction types on the text part ("love", "like", ...)

    @classmethod
    def from_json(cls, body: Mapping[str, Any], state: SimState) -> EventSpec:
        """Admin input; a chat the simulator knows supplies its own line, service and group flag."""
        known = state.chats.get(str(body.get("chat_id", "")))
        defaults = cls()
        spec = cls(
            event_type=str(body.get("event_type", defaults.event_type)),
            version=str(body.get("version", defaults.version)),
            chat_id=str(body.get("chat_id") or uuid.uuid4()),
            line=str(body.get("line") or (known.line if known else defaults.line)),
            to=str(body.get("to") or (known.to if known else defaults.to)),
            service=str(
                body.get("service") or (known.service if known and known.service else defaults.service)
            ),
            is_group=bool(body.get("is_group", known.is_group if known else False)),
            health=str(body.get("health") or (known.health if known else defaults.health)),
            sent_at=parse_iso(body["sent_at"]) if isinstance(body.get("sent_at"), str) else state.clock(),
            text=str(body.get("text", defaults.text)),
            event_id=str(body.get("event_id") or uuid.uuid4()),
            nulls=tuple(str(n) for n in body.get("nulls") or ()),
            reactions=tuple(str(r) for r in body.get("reactions") or ()),
        )
        unknown = [n for n in spec.nulls if n not in NULLABLE]
        if unknown:
            raise ValueError(f"nulls: {unknown} are not among {NULLABLE}")
        if spec.version not in VERSIONS:
            raise ValueError(f"version must be one of {VERSIONS}")
        if spec.service not in SERVICES:
            raise ValueError(f"service must be one of {SERVICES}")
        if spec.health not in HEALTHS:
            raise ValueError(f"health must be one of {HEALTHS}")
        return spec


def _handle(handle_id: str, handle: str, service: str, is_me: bool) -> dict[str, Any]:
    return {
        "id": handle_id,
        "handle": handle,
        "joined_at": "2026-02-20T09:00:00Z",
        "service": service,
        "is_me": is_me,
        "left_at": None,
        "status": "active",
    }


def build_event(spec: EventSpec, state: SimState | None = None) -> dict[str, Any]:
    """The whole envelope Linq would send for `spec` (see docs/linq-contract.md §7.5-§7.7)."""
    when = iso(spec.sent_at)
    me = _handle(str(uuid.uuid5(uuid.NAMESPACE_URL, spec.line)), spec.line, spec.service, True)
    them = _handle(str(uuid.uuid5(uuid.NAMESPACE_URL, spec.to)), spec.to, spec.service, False)
    health = {"status": spec.health, "doc_url": CHAT_HEALTH_DOC, "updated_at": when}
    outbound = spec.event_type != "message.received"
    message_id = str(uuid.uuid4())
    reactions = [
        {"is_me": False, "handle": them, "type": kind, "custom_emoji": "🚀" if kind == "custom" else None}
        for kind in spec.reactions
    ]
    # Webhooks' text parts declare only type and value; reactions ride along when asked for.
    part: dict[str, Any] = {"type": "text", "value": spec.text}
    if reactions:
        part["reactions"] = reactions
    parts: list[dict[str, Any]] = [part]
    data: dict[str, Any]
    if spec.event_type == "chat.created":
        known = state.chats.get(spec.chat_id) if state is not None else None
        if known is not None and state is not None:
            data = state.chat_json(known)
        else:
            data = {
                "id": spec.chat_id,
                "created_at": when,
                "updated_at": when,
                "display_name": spec.to,
                "is_group": spec.is_group,
                "is_archived": False,
                "service": spec.service,
                "group_chat_icon": None,
                "health_status": health,
                "handles": [me, them],
            }
    elif spec.event_type == "message.failed":
        # Not versioned (the same in both): MessageFailedEvent.
        data = {
            "chat_id": spec.chat_id,
            "message_id": message_id,
            "code": 4001,
            "reason": "Request expired before being processed",
            "failed_at": when,
        }
    elif spec.event_type not in MESSAGE_EVENTS + STATUS_EVENTS:
        data = {"chat_id": spec.chat_id}
    elif spec.version == "2026-02-03":
        data = {
            "id": message_id,
            "chat": {
                "id": spec.chat_id,
                "is_group": spec.is_group,
                "owner_handle": me,
                "health_status": health,
            },
            "direction": "outbound" if outbound else "inbound",
            "sender_handle": me if outbound else them,
            "service": spec.service,
            "preferred_service": spec.service,
            "parts": parts,
            "sent_at": when,
            "delivered_at": None,
            "read_at": None,
            "effect": None,
            "reply_to": None,
            "idempotency_key": None,
        }
    else:
        data = {
            "chat_id": spec.chat_id,
            "is_group": spec.is_group,
            "is_from_me": outbound,
            "from": spec.line if outbound else spec.to,
            "from_handle": me if outbound else them,
            "recipient_phone": None if outbound else spec.line,
            "recipient_handle": None if outbound else me,
            "received_at": None if outbound else when,
            "service": spec.service,
            "preferred_service": spec.service,
            "idempotency_key": None,
            "message": {
                "id": message_id,
                "created_at": when,
                "updated_at": when,
                "sent_at": when,
                "delivered_at": None,
                "read_at": None,
                "is_delivered": False,
                "is_read": False,
                "parts": parts,
            },
        }
    if spec.event_type in STATUS_EVENTS:
        # A status event describes an outbound message of ours, with when it was delivered/read.
        stamp = "delivered_at" if spec.event_type == "message.delivered" else "read_at"
        data[stamp] = when
        if spec.version == "2025-01-01":
            data["message_id"] = message_id  # 2026-02-03 carries the message's own `id` only
            data["message"]["is_delivered"] = True
            data["message"][stamp] = when
            data["message"]["is_read"] = spec.event_type == "message.read"
    for name in spec.nulls:
        if name in _MESSAGE_LEVEL:
            # The message's own field (a handle's `service` may not be null).
            for node in (data, data.get("message")):
                if isinstance(node, dict) and name in node:
                    node[name] = None
        else:
            _null_everywhere(data, name)
    return {
        "api_version": "v3",
        "webhook_version": spec.version,
        "event_type": spec.event_type,
        "event_id": spec.event_id,
        "created_at": when,
        "trace_id": uuid.uuid4().hex,
        "partner_id": PARTNER_ID,
        "data": data,
    }


_MESSAGE_LEVEL = ("service", "sent_at")


def _null_everywhere(node: Any, name: str) -> None:
    """Set `name` to null wherever it appears in the event's data (as Linq's schema allows)."""
    if isinstance(node, dict):
        for key, value in node.items():
            if key == name:
                node[key] = None
            else:
                _null_everywhere(value, name)
    elif isinstance(node, list):
        for item in node:
            _null_everywhere(item, name)


def signed_headers(
    secret: str, webhook_id: str, timestamp: int, body: bytes, *, event_type: str | None = None
) -> dict[str, str]:
    """Both header sets Linq sends with every delivery (docs/linq-contract.md §7.3, §7.4).

    The legacy signature is keyed with the whole secret string, as the old docs' example does.
    """
    when = dt.datetime.fromtimestamp(timestamp, dt.UTC)
    headers = {
        "content-type": "application/json",
        "webhook-id": webhook_id,
        "webhook-timestamp": str(timestamp),
        "webhook-signature": Webhook(secret).sign(webhook_id, when, body.decode()),
        "x-webhook-timestamp": str(timestamp),
        "x-webhook-signature": hmac.new(
            secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256
        ).hexdigest(),
        "x-webhook-subscription-id": "sub_sim_001",
    }
    if event_type is not None:
        headers["x-webhook-event"] = event_type
    return headers


def build_account_event(fields: Mapping[str, Any], state: SimState | None = None) -> dict[str, Any]:
    """An event about a line or the account. `fields`: `event_type`, `line` (phone_number and
    contact_card events), `reputation`, `line_status`, `previous_reputation`, `previous_status`,
    `changed_at` (Unix s), `token_id`, `token_prefix`, `expires_at` (ISO), `subscription_id`,
    `target_url`, `summary`, `event_id`."""
    event_type = str(fields.get("event_type"))
    if event_type not in ACCOUNT_EVENTS:
        raise ValueError(f"event_type must be one of {ACCOUNT_EVENTS}")
    when_s = fields.get("changed_at")
    when = iso(float(when_s)) if isinstance(when_s, int | float) else iso(time.time())
    line = str(fields.get("line") or "+12223334444")
    known = state.lines.get(line) if state is not None else None
    data: dict[str, Any]
    if event_type == "phone_number.status_updated":
        rep = str(fields.get("reputation") or (known.reputation if known else "HEALTHY"))
        status = str(fields.get("line_status") or (known.status if known else "ACTIVE"))
        data = {
            "phone_number": line,
            "new_reputation": rep,
            "new_status": status,
            "previous_reputation": str(fields.get("previous_reputation") or rep),
            "previous_status": str(fields.get("previous_status") or status),
            "changed_at": when,
        }
    else:
        data = {
            "summary": str(fields.get("summary") or event_type.replace(".", " ").replace("_", " ")),
            "occurred_at": when,
            "actor": {"type": "system"},
            "origin": "linq",
        }
        if event_type.startswith("contact_card."):
            card = state.cards.get(line) if state is not None else None
            data["phone_number"] = line
            data["contact_card"] = {
                "id": str(uuid.uuid5(uuid.NAMESPACE_URL, "card:" + line)),
                "first_name": card.first_name if card else "Acme",
            }
        elif event_type.startswith("api_token."):
            data["api_token"] = {
                "id": str(fields.get("token_id") or "tok_sim_001"),
                "token_prefix": str(fields.get("token_prefix") or "lq_sim"),
                "expires_at": fields.get("expires_at") or when,
                "name": "cardshare",
            }
        else:
            data["webhook_subscription"] = {
                "id": str(fields.get("subscription_id") or "sub_sim_001"),
                "target_url": fields.get("target_url") or "https://hooks.example.com/webhooks/linq",
            }
    return {
        "api_version": "v3",
        "webhook_version": "2026-02-03",
        "event_type": event_type,
        "event_id": str(fields.get("event_id") or uuid.uuid4()),
        "created_at": when,
        "trace_id": uuid.uuid4().hex,
        "partner_id": PARTNER_ID,
        "data": data,
    }


async def _post(
    url: str,
    secret: str,
    envelope: Mapping[str, Any],
    *,
    webhook_id: str | None = None,
    timestamp: int | None = None,
) -> dict[str, Any]:
    """Sign and POST one event: as `webhook_id` (default: the event id) at `timestamp` (Unix
    seconds, default now). A retry of an event is the same id at a later timestamp."""
    raw = json.dumps(envelope, separators=(",", ":")).encode()
    webhook_id = webhook_id or str(envelope["event_id"])
    timestamp = int(time.time()) if timestamp is None else timestamp
    headers = signed_headers(secret, webhook_id, timestamp, raw, event_type=str(envelope["event_type"]))
    try:
        async with httpx.AsyncClient(timeout=10.0) as client:
            answer = await client.post(url, content=raw, headers=headers)
    except httpx.HTTPError as exc:
        return {"status": None, "error": type(exc).__name__, "event_id": envelope["event_id"]}
    return {
        "status": answer.status_code,
        "body": answer.text[:500],
        "event_id": envelope["event_id"],
        "webhook_id": webhook_id,
        "timestamp": timestamp,
    }


async def emit_pending(state: SimState) -> None:
    """Send what the state queued (line status changes, card changes) to the subscription, as
    Linq would; every attempt is kept in `state.emitted`."""
    while state.outbox:
        fields = state.outbox.pop(0)
        target = state.webhook_target
        envelope = build_account_event(fields, state)
        if target is None:
            state.emitted.append({"event_type": envelope["event_type"], "status": None, "error": "no target"})
            continue
        answer = await _post(target["url"], target["secret"], envelope)
        state.emitted.append(
            {"event_type": envelope["event_type"], "at": time.time(), **answer, "data": envelope["data"]}
        )


def schedule_emits(state: SimState) -> None:
    """Called after every request: queued events go out in the background."""
    if state.outbox:
        asyncio.get_running_loop().create_task(emit_pending(state))


def schedule_changes(state: SimState, changes: Sequence[Mapping[str, Any]]) -> int:
    """Line state changes over time: each `{phone_number, after_s, reputation?, status?}` is
    applied `after_s` seconds from now (and its webhook sent)."""
    loop = asyncio.get_running_loop()
    for change in changes:
        phone = str(change["phone_number"])
        if phone not in state.lines:
            raise ValueError(f"unknown line {phone!r}")
        after = float(change.get("after_s", 0))
        if after < 0:
            raise ValueError("after_s must not be negative")

        def apply(c: Mapping[str, Any] = change, p: str = phone) -> None:
            state.set_line_state(p, reputation=c.get("reputation"), status=c.get("status"))
            schedule_emits(state)

        loop.call_later(after, apply)
    return len(changes)


async def deliver(state: SimState, body: Mapping[str, Any]) -> dict[str, Any]:
    """POST one signed event to `body["url"]` and report the receiver's answer.

    Options beyond the event: `secret` (whsec_..., required), `webhook_id` (default: the event id),
    `timestamp` (Unix seconds to sign with, default now), `legacy` (send the X-Webhook-* set, default
    true), `standard` (send the webhook-* set, default true), `tamper` (alter the body after signing).
    """
    url, secret = body.get("url"), body.get("secret")
    if not isinstance(url, str) or not url.startswith(("http://", "https://")):
        raise ValueError("url must be an http(s) URL")
    if not isinstance(secret, str) or not secret.startswith("whsec_"):
        raise ValueError("secret must be a whsec_ signing secret")
    if body.get("event_type") in ACCOUNT_EVENTS:
        return await _post(
            url,
            secret,
            build_account_event(body, state),
            webhook_id=str(body["webhook_id"]) if body.get("webhook_id") else None,
            timestamp=int(body["timestamp"]) if body.get("timestamp") is not None else None,
        )
    spec = EventSpec.from_json(body, state)
    raw = json.dumps(build_event(spec, state), separators=(",", ":")).encode()
    webhook_id = str(body.get("webhook_id") or spec.event_id)
    timestamp = int(body["timestamp"]) if body.get("timestamp") is not None else int(time.time())
    headers = signed_headers(secret, webhook_id, timestamp, raw, event_type=spec.event_type)
    if body.get("standard", True) is False:
        for name in ("webhook-id", "webhook-timestamp", "webhook-signature"):
            headers.pop(name)
    if body.get("legacy", True) is False:
        for name in (
            "x-webhook-timestamp",
            "x-webhook-signature",
            "x-webhook-subscription-id",
            "x-webhook-event",
        ):
            headers.pop(name)
    if body.get("tamper"):
        raw = raw.replace(b'"is_group":false', b'"is_group":true', 1) + b" "
    _remember(state, spec)
    try:
        async with httpx.AsyncClient(timeout=10.0) as client:
            answer = await client.post(url, content=raw, headers=headers)
    except httpx.HTTPError as exc:
        return {
            "status": None,
            "error": type(exc).__name__,
            "event_id": spec.event_id,
            "webhook_id": webhook_id,
        }
    return {
        "status": answer.status_code,
        "body": answer.text[:500],
        "event_id": spec.event_id,
        "webhook_id": webhook_id,
        "timestamp": timestamp,
        "chat_id": spec.chat_id,
    }


def _remember(state: SimState, spec: EventSpec) -> None:
    # The message the event describes now exists in Linq, so a later sync finds it too.
    chat = state.chats.get(spec.chat_id)
    if chat is None or spec.event_type not in MESSAGE_EVENTS:
        return
    message = Message(
        str(uuid.uuid4()), spec.event_type == "message.sent", spec.sent_at, spec.service, spec.text
    )
    chat.messages.insert(0, message)
    chat.messages.sort(key=lambda m: m.sent_at, reverse=True)
