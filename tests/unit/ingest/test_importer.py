"""Import rows: one rule per column, one reason per bad row, line numbers as an editor shows them."""

from __future__ import annotations

import datetime as dt
import io
import json
import uuid
from pathlib import Path

import pytest

from worker.errors import InputError
from worker.ingest.importer import Row, RowError, detect_format, parse_row, read_rows
from worker.rules.facts import ChatActivity

NOW = dt.datetime(2026, 3, 10, 12, 0, tzinfo=dt.UTC)
CHAT = "3c9a1f2e-7b44-4d0a-8e6f-91a2b3c4d5e6"
GOOD: dict[str | None, object] = {
    "chat_id": CHAT,
    "line": "+12223334444",
    "service": "iMessage",
    "last_outbound_at": "2026-03-02T15:04:05Z",
}


def test_a_good_row() -> None:
    assert parse_row(GOOD, now=NOW) == ChatActivity(
        uuid.UUID(CHAT),
        "+12223334444",
        service="iMessage",
        is_group=None,
        outbound_at=dt.datetime(2026, 3, 2, 15, 4, 5, tzinfo=dt.UTC),
    )


@pytest.mark.parametrize(
    ("changes", "expected"),
    [
        ({"service": "imessage"}, {"service": "iMessage"}),
        ({"service": " sms "}, {"service": "SMS"}),
        ({"line": "+1 (222) 333-4444"}, {"line_phone": "+12223334444"}),
        ({"last_outbound_at": "2026-03-02T10:04:05-05:00"}, {}),
        ({"is_group": "true"}, {"is_group": True}),
        ({"is_group": "0"}, {"is_group": False}),
        ({"is_group": False}, {"is_group": False}),
        ({"extra": "ignored"}, {}),
    ],
)
def test_accepted_spellings(changes: dict[str | None, object], expected: dict[str, object]) -> None:
    activity = parse_row({**GOOD, **changes}, now=NOW)
    assert isinstance(activity, ChatActivity)
    assert activity.outbound_at == dt.datetime(2026, 3, 2, 15, 4, 5, tzinfo=dt.UTC)
    for key, value in expected.items():
        assert getattr(activity, key) == value


@pytest.mark.parametrize(
    ("changes", "reason"),
    [
        ({"chat_id": ""}, "chat_id is empty"),
        ({"chat_id": "chat-42"}, "chat_id 'chat-42' is not a UUID"),
        ({"line": ""}, "line is empty"),
        ({"line": "2223334444"}, "line '2223334444' is not an E.164 phone number"),
        ({"line": "+1 22"}, "is not an E.164 phone number"),
        ({"service": "WhatsApp"}, "service 'WhatsApp' is not iMessage, SMS or RCS"),
        ({"service": ""}, "service '' is not iMessage"),
        ({"last_outbound_at": ""}, "last_outbound_at is empty"),
        ({"last_outbound_at": "last tuesday"}, "last_outbound_at 'last tuesday' is not an ISO-8601"),
        ({"last_outbound_at": "2026-03-02T15:04:05"}, "has no time zone"),
        ({"last_outbound_at": "2026-03-11T12:00:00Z"}, "is in the future"),
        ({"last_outbound_at": 1772463845}, "is not an ISO-8601"),
        ({"is_group": "maybe"}, "is_group 'maybe' is not true or false"),
        ({"service": "iMessage\ufffd"}, "service is not valid UTF-8"),
        ({None: ["surplus"]}, "more values than the header has columns"),
    ],
)
def test_each_bad_value_has_one_reason(changes: dict[str | None, object], reason: str) -> None:
    result = parse_row({**GOOD, **changes}, now=NOW)
    assert isinstance(result, str)
    assert reason in result
    assert "\n" not in result


def rows(text: str, fmt: str) -> list[Row | RowError]:
    return list(read_rows(io.StringIO(text), fmt, now=NOW))  # type: ignore[arg-type]


def test_csv_line_numbers_count_the_header_and_skip_nothing() -> None:
    text = (
        "chat_id,line,service,last_outbound_at\n"
        f"{CHAT},+12223334444,iMessage,2026-03-02T15:04:05Z\n"
        "nope,+12223334444,iMessage,2026-03-02T15:04:05Z\n"
        "\n"
        f'"{CHAT}",+12223334444,SMS,"2026-03-02T15:04:05Z"\n'
        f"{CHAT},+12223334444,iMessage\n"
    )
    got = rows(text, "csv")
    assert [type(r).__name__ for r in got] == ["Row", "RowError", "Row", "RowError"]
    assert [r.line for r in got] == [2, 3, 5, 6]
    assert isinstance(got[3], RowError)
    assert "last_outbound_at is empty" in got[3].reason


def test_csv_header_is_case_and_space_insensitive_and_checked() -> None:
    got = rows(
        " Chat_ID , LINE,Service,last_outbound_at\n" + ",".join(str(v) for v in GOOD.values()) + "\n", "csv"
    )
    assert isinstance(got[0], Row)
    with pytest.raises(InputError, match="header lacks service, last_outbound_at"):
        rows("chat_id,line\n", "csv")
    with pytest.raises(InputError, match="empty"):
        rows("", "csv")


def test_json_lines() -> None:
    first = {**GOOD, "is_group": True}
    last = {**GOOD, "service": "RCS", "last_outbound_at": None}
    text = f"{json.dumps(first)}\n\n[1, 2]\n{{not json\n{json.dumps(last)}\n"
    got = rows(text, "jsonl")
    assert [r.line for r in got] == [1, 3, 4, 5]
    assert isinstance(got[0], Row)
    assert got[0].activity.is_group is True
    assert [r.reason for r in got[1:] if isinstance(r, RowError)] == [
        "is not a JSON object (JSON Lines: one object per line)",
        "is not a JSON object (JSON Lines: one object per line)",
        "last_outbound_at is empty (a chat without an outbound message is never due)",
    ]


@pytest.mark.parametrize(
    ("name", "head", "expected"),
    [
        ("chats.csv", "{", "csv"),
        ("chats.jsonl", "chat_id", "jsonl"),
        ("chats.ndjson", "", "jsonl"),
        ("chats.txt", '  {"chat_id"', "jsonl"),
        ("chats.txt", "chat_id,line", "csv"),
    ],
)
def test_detect_format(name: str, head: str, expected: str) -> None:
    assert detect_format(Path(name), head) == expected


def test_a_json_array_is_refused_as_a_whole() -> None:
    with pytest.raises(InputError, match="JSON Lines"):
        detect_format(Path("chats.json"), "[{}]")
