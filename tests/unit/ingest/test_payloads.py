"""Linq payloads to ChatActivity: both webhook versions (Linq's fixtures), chat objects, opt-outs,
and one clear reason for each malformed body."""

from __future__ import annotations

import copy
import dataclasses
import datetime as dt
import json
import uuid
from pathlib import Path
from typing import Any

import pytest

from worker.ingest.payloads import (
    UNKNOWN_LINE,
    MalformedPayload,
    activity_from_chat,
    is_opt_out_message,
    newest_outbound,
    parse_event,
)
from worker.rules.facts import ChatActivity
from worker.simulator.webhooks import EventSpec, build_event

FIXTURES = Path(__file__).resolve().parents[2] / "fixtures" / "linq"
CHAT = uuid.UUID("3c9a1f2e-7b44-4d0a-8e6f-91a2b3c4d5e6")
LINE = "+12223334444"
SENT_AT = dt.datetime(2026, 3, 2, 15, 4, 4, 900_000, tzinfo=dt.UTC)


def fixture(name: str) -> dict[str, Any]:
    return dict(json.loads((FIXTURES / name).read_text()))


def body(doc: dict[str, Any]) -> bytes:
    return json.dumps(doc).encode()


def test_message_sent_2026_fixture() -> None:
    parsed = parse_event(body(fixture("message_sent_v2026.json")))
    assert parsed.event_id == "6f1c2a9e-3b7d-4e51-9c0a-2d8e4f7b1a35"
    assert parsed.event_type == "message.sent"
    assert parsed.version == "2026-02-03"
    assert parsed.activity == ChatActivity(
        CHAT, LINE, service="iMessage", is_group=False, outbound_at=SENT_AT, health_status="HEALTHY"
    )


def test_message_sent_2025_fixture() -> None:
    parsed = parse_event(body(fixture("message_sent_v2025.json")))
    assert parsed.event_id == "9d0e7c55-1a2b-4c3d-8e9f-0a1b2c3d4e5f"
    assert parsed.version == "2025-01-01"
    assert parsed.activity == ChatActivity(
        CHAT, LINE, service="iMessage", is_group=False, outbound_at=SENT_AT
    )


def test_both_versions_carry_the_same_facts_for_the_same_message() -> None:
    spec = EventSpec(chat_id=str(CHAT), sent_at=SENT_AT.timestamp(), event_id="e1")
    old = parse_event(body(build_event(dataclasses.replace(spec, version="2025-01-01")))).activity
    new = parse_event(body(build_event(spec))).activity
    assert old is not None
    assert new is not None
    assert (old.chat_id, old.line_phone, old.service, old.is_group, old.outbound_at) == (
        new.chat_id,
        new.line_phone,
        new.service,
        new.is_group,
        new.outbound_at,
    )


@pytest.mark.parametrize(
    ("version", "text", "health", "is_group", "opted_out"),
    [
        ("2026-02-03", "Sounds good, thanks", "HEALTHY", False, False),  # a reply clears an opt-out
        ("2025-01-01", "Sounds good, thanks", "HEALTHY", False, False),
        ("2026-02-03", "STOP", "HEALTHY", False, True),  # the keyword itself does not
        ("2025-01-01", "STOP", "HEALTHY", False, True),
        ("2026-02-03", "Thanks", "OPTED_OUT", False, True),  # Linq's health says so
        ("2025-01-01", "Thanks", "OPTED_OUT", False, False),  # 2025-01-01 carries no health
        ("2026-02-03", "STOP", "HEALTHY", True, None),  # group threads are never marked
        ("2025-01-01", "STOP", "HEALTHY", True, None),
    ],
)
def test_message_received_clears_or_sets_the_opt_out(
    version: str, text: str, health: str, is_group: bool, opted_out: bool | None
) -> None:
    spec = EventSpec(
        event_type="message.received",
        version=version,
        chat_id=str(CHAT),
        text=text,
        health=health,
        is_group=is_group,
        sent_at=SENT_AT.timestamp(),
        event_id="e2",
    )
    activity = parse_event(body(build_event(spec))).activity
    assert activity is not None
    assert activity.opted_out is opted_out
    assert activity.outbound_at is None
    assert activity.inbound_at == SENT_AT
    assert activity.line_phone == LINE


def test_outbound_with_opted_out_health_marks_the_chat() -> None:
    doc = fixture("message_sent_v2026.json")
    doc["data"]["chat"]["health_status"]["status"] = "OPTED_OUT"
    activity = parse_event(body(doc)).activity
    assert activity is not None
    assert activity.opted_out is True
    assert activity.outbound_at == SENT_AT


def test_chat_created_uses_the_is_me_handle() -> None:
    doc = {"event_type": "chat.created", "event_id": "e3", "data": fixture("chat.json")}
    assert parse_event(body(doc)).activity == ChatActivity(
        CHAT, LINE, service="iMessage", is_group=False, health_status="HEALTHY"
    )


def test_chat_object_falls_back_to_the_listed_line() -> None:
    chat = fixture("chat.json")
    chat["handles"] = [h for h in chat["handles"] if not h["is_me"]]
    assert activity_from_chat(chat, line="+19998887777").line_phone == "+19998887777"
    with pytest.raises(MalformedPayload, match="no is_me handle"):
        activity_from_chat(chat)


def test_sent_at_missing_falls_back_to_the_envelope_time() -> None:
    doc = fixture("message_sent_v2025.json")
    del doc["data"]["message"]["sent_at"]
    activity = parse_event(body(doc)).activity
    assert activity is not None
    assert activity.outbound_at == dt.datetime(2026, 3, 2, 15, 4, 5, 120_000, tzinfo=dt.UTC)


def test_unknown_event_types_are_ignored_whatever_their_data() -> None:
    parsed = parse_event(b'{"event_type":"message.read","event_id":"e4","data":"anything"}')
    assert parsed.activity is None
    assert parsed.event_type == "message.read"


def test_event_id_falls_back_to_the_webhook_id() -> None:
    doc = fixture("message_sent_v2026.json")
    del doc["event_id"]
    assert parse_event(body(doc), webhook_id="wh-1").event_id == "wh-1"


def _broken(path: list[str], value: object) -> bytes:
    doc = copy.deepcopy(fixture("message_sent_v2026.json"))
    target: Any = doc
    for key in path[:-1]:
        target = target[key]
    if value is KeyError:
        del target[path[-1]]
    else:
        target[path[-1]] = value
    return body(doc)


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        (b"not json", "body is not JSON"),
        (b"[1, 2]", "not a JSON object"),
        (b'{"event_id": "x"}', "event_type is missing"),
        (_broken(["event_id"], KeyError), "event_id is missing"),
        (_broken(["event_id"], "x" * 200), "longer than 128"),
        (_broken(["data"], [1]), "data is not an object"),
        (_broken(["data", "chat", "id"], "chat-1"), "data.chat.id 'chat-1' is not a UUID"),
        (_broken(["data", "chat", "id"], KeyError), "data.chat.id is missing"),
        (_broken(["data", "chat", "owner_handle"], KeyError), None),  # sender_handle still names it
        (_broken(["data", "direction"], "sideways"), "data.direction 'sideways'"),
        (_broken(["data", "chat", "is_group"], "no"), "data.chat.is_group is not true or false"),
        (_broken(["data", "sent_at"], "yesterday"), "data.sent_at 'yesterday' is not an ISO-8601"),
        (_broken(["data", "sender_handle", "handle"], "someone@example.com"), None),
    ],
)
def test_malformed_bodies_name_the_field(raw: bytes, reason: str | None) -> None:
    if reason is None:
        assert parse_event(raw).activity is not None
        return
    with pytest.raises(MalformedPayload, match=reason):
        parse_event(raw)


def test_no_line_at_all_leaves_the_line_to_the_receiver() -> None:
    # Issue 19: Linq's schema allows null handles, so such an event is not malformed (a 400
    # would lose it): the receiver resolves the line from the chat it knows, or keeps it.
    doc = fixture("message_sent_v2025.json")
    doc["data"]["from_handle"] = None
    doc["data"]["from"] = "not-a-number"
    parsed = parse_event(body(doc))
    assert parsed.line_unknown
    assert parsed.activity is not None
    assert parsed.activity.line_phone == UNKNOWN_LINE


def test_an_unknown_service_is_stored_as_unknown_not_refused() -> None:
    doc = fixture("message_sent_v2026.json")
    doc["data"]["service"] = "Carrier Pigeon"
    activity = parse_event(body(doc)).activity
    assert activity is not None
    assert activity.service is None


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("STOP", True),
        ("  QUIT ", True),
        ("stop", False),  # the fixed keywords are case-sensitive
        ("please stop", False),
        ("opt out", True),
        ("Opt-Out", True),
        ("OPTOUT", True),
        ("optout now", False),
        ("", False),
    ],
)
def test_opt_out_keywords(text: str, expected: bool) -> None:
    assert is_opt_out_message([{"type": "text", "value": text}]) is expected


def test_newest_outbound_skips_inbound_and_failed_messages() -> None:
    messages = [
        {"is_from_me": False, "sent_at": "2026-03-05T00:00:00Z"},
        {"is_from_me": True, "delivery_status": "failed", "sent_at": "2026-03-04T00:00:00Z"},
        {"is_from_me": True, "delivery_status": "sent", "sent_at": "2026-03-02T00:00:00Z"},
        {"is_from_me": True, "delivery_status": "delivered", "created_at": "2026-03-03T00:00:00Z"},
    ]
    assert newest_outbound(messages) == dt.datetime(2026, 3, 3, tzinfo=dt.UTC)
    assert newest_outbound(messages[:2]) is None
