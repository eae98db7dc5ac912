"""Webhook events about lines and the account (not about chats), turned into facts. Pure: no I/O.

- `phone_number.status_updated`: a line's reputation (HEALTHY, AT_RISK, CRITICAL) and status
  (ACTIVE, FLAGGED) changed; the gate holds a CRITICAL or FLAGGED line (docs/decisions.md §10);
- `contact_card.created/updated/deleted`: a line's card changed; the payload carries no
  `is_active`, so the line's card is re-read from Linq (docs/linq-contract.md §7.9);
- `api_token.expiry_scheduled`, `api_token.expired`, `webhook_subscription.disabled`: something
  an operator must act on, kept as a warning until acknowledged or superseded;
  `webhook_subscription.enabled` resolves the warning of its subscription.

Shapes as the SDK (linq-python 0.65) types them; each missing or malformed field is named in one
line (MalformedPayload).
"""

from __future__ import annotations

import datetime as dt
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from worker.ingest.payloads import MalformedPayload, parse_time
from worker.rules.facts import E164_PATTERN
from worker.rules.gate import LINE_STATUSES, REPUTATIONS

E164 = re.compile(E164_PATTERN)
CARD_EVENTS = ("contact_card.created", "contact_card.updated", "contact_card.deleted")
WARNING_EVENTS = ("api_token.expiry_scheduled", "api_token.expired", "webhook_subscription.disabled")
RESOLVING_EVENTS = ("webhook_subscription.enabled",)
LINE_EVENTS = ("phone_number.status_updated",)
HANDLED = frozenset((*LINE_EVENTS, *CARD_EVENTS, *WARNING_EVENTS, *RESOLVING_EVENTS))


@dataclass(frozen=True)
class LineStatusUpdate:
    phone: str
    reputation: str
    status: str
    changed_at: dt.datetime
    previous_reputation: str | None = None
    previous_status: str | None = None


@dataclass(frozen=True)
class CardChanged:
    phone: str
    event_type: str


@dataclass(frozen=True)
class AccountWarning:
    kind: str  # the event type
    subject: str  # what it is about: "api_token <id>", "webhook_subscription <id>"
    summary: str
    occurred_at: dt.datetime | None
    resolves: bool = False  # the subject is fine again


@dataclass(frozen=True)
class LineEvent:
    event_id: str
    event_type: str
    line_status: LineStatusUpdate | None = None
    card: CardChanged | None = None
    warning: AccountWarning | None = None


def parse(body: bytes, *, event_id: str) -> LineEvent:
    """A handled event's body (already known to be a JSON object with a handled event_type)."""
    doc = json.loads(body)
    event_type = str(doc.get("event_type"))
    data = doc.get("data")
    if not isinstance(data, dict):
        raise MalformedPayload(f"{event_type}: data is not an object")
    if event_type in LINE_EVENTS:
        return LineEvent(event_id, event_type, line_status=_line_status(event_type, data))
    if event_type in CARD_EVENTS:
        return LineEvent(event_id, event_type, card=CardChanged(_phone(event_type, data), event_type))
    return LineEvent(event_id, event_type, warning=_warning(event_type, data))


def _line_status(event_type: str, data: Mapping[str, Any]) -> LineStatusUpdate:
    phone = _phone(event_type, data)
    reputation = _one_of(event_type, data, "new_reputation", REPUTATIONS)
    status = _one_of(event_type, data, "new_status", LINE_STATUSES)
    changed = _time(event_type, data, "changed_at")
    if changed is None:
        raise MalformedPayload(f"{event_type}: data.changed_at is missing")
    previous_rep = data.get("previous_reputation")
    previous_status = data.get("previous_status")
    return LineStatusUpdate(
        phone,
        reputation,
        status,
        changed,
        previous_rep if previous_rep in REPUTATIONS else None,
        previous_status if previous_status in LINE_STATUSES else None,
    )


def _warning(event_type: str, data: Mapping[str, Any]) -> AccountWarning:
    occurred = _time(event_type, data, "occurred_at")
    summary = data.get("summary")
    text = summary.strip()[:300] if isinstance(summary, str) and summary.strip() else event_type
    if event_type.startswith("api_token."):
        token = data.get("api_token")
        if not isinstance(token, dict) or not isinstance(token.get("id"), str) or not token["id"]:
            raise MalformedPayload(f"{event_type}: data.api_token.id is missing")
        name = token.get("name") if isinstance(token.get("name"), str) else None
        label = f"API token {token.get('token_prefix') or token['id']}" + (f" ({name})" if name else "")
        expires = token.get("expires_at")
        if event_type == "api_token.expired":
            text = f"{label} expired: shares will fail with 401 until LINQ_API_V3_API_KEY is replaced"
        else:
            when = f" at {expires}" if isinstance(expires, str) else ""
            text = f"{label} expires{when}: rotate LINQ_API_V3_API_KEY before then"
        return AccountWarning(event_type, f"api_token {token['id'][:100]}", text, occurred)
    sub = data.get("webhook_subscription")
    if not isinstance(sub, dict) or not isinstance(sub.get("id"), str) or not sub["id"]:
        raise MalformedPayload(f"{event_type}: data.webhook_subscription.id is missing")
    target = sub.get("target_url") if isinstance(sub.get("target_url"), str) else None
    where = f" ({target[:200]})" if target else ""
    if event_type in RESOLVING_EVENTS:
        return AccountWarning(
            event_type, f"webhook_subscription {sub['id'][:100]}", text, occurred, resolves=True
        )
    text = (
        f"webhook subscription {sub['id']}{where} is disabled: outbound activity no longer arrives "
        "live (the sweep still shares what sync and import record)"
    )
    return AccountWarning(event_type, f"webhook_subscription {sub['id'][:100]}", text, occurred)


def _phone(event_type: str, data: Mapping[str, Any]) -> str:
    value = data.get("phone_number")
    if not isinstance(value, str) or not E164.match(value):
        raise MalformedPayload(f"{event_type}: data.phone_number is missing or not E.164")
    return value


def _one_of(event_type: str, data: Mapping[str, Any], field: str, allowed: tuple[str, ...]) -> str:
    value = data.get(field)
    if value not in allowed:
        raise MalformedPayload(
            f"{event_type}: data.{field} {str(value)[:30]!r} is not one of {', '.join(allowed)}"
        )
    return str(value)


def _time(event_type: str, data: Mapping[str, Any], field: str) -> dt.datetime | None:
    value = data.get(field)
    if value is None:
        return None
    if not isinstance(value, str):
        raise MalformedPayload(f"{event_type}: data.{field} is not a timestamp string")
    try:
        return parse_time(value)
    except ValueError:
        raise MalformedPayload(
            f"{event_type}: data.{field} {value[:40]!r} is not an ISO-8601 timestamp"
        ) from None
