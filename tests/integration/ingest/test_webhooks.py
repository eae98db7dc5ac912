"""The webhook receiver on a real socket, fed by the simulator's signed deliveries, writing to real
PostgreSQL; and end to end: a delivered `message.sent` makes the chat due, the sweep shares it once."""

from __future__ import annotations

import datetime as dt
import io
import json
import logging
import time
import uuid
from collections.abc import Iterator
from typing import Any, Literal

import httpx
import psycopg
import pytest
from sqlalchemy import text
from sqlalchemy.engine import make_url

from tests.support.receiver import SECRET, ReceiverServer
from tests.support.servers import Servers
from tests.support.sweeps import Collector, drained, sweep
from tests.support.world import World
from worker.config import Secret, Settings
from worker.deps import Deps
from worker.ingest.webhooks import create_app
from worker.logs import configure as configure_logging
from worker.sharing.share import Outcome, share_chat
from worker.simulator import SimulatorAdmin
from worker.simulator.webhooks import EventSpec, build_event, signed_headers
from worker.store.chats import mark_opted_out
from worker.store.session import transaction

OTHER = "whsec_ZmVkY2JhOTg3NjU0MzIxMGZlZGNiYTk4NzY1NDMyMTA="
LINE = "+12223334444"


@pytest.fixture
def receiver(settings: Settings, deps: Deps) -> Iterator[ReceiverServer]:
    app = create_app(settings.replace(webhook_secrets=(Secret(OTHER), Secret(SECRET))), deps.sessions)
    with ReceiverServer(app) as server:
        yield server


@pytest.fixture
def legacy_receiver(settings: Settings, deps: Deps) -> Iterator[ReceiverServer]:
    s = settings.replace(webhook_secrets=(Secret(SECRET),), webhook_legacy_signatures=True)
    with ReceiverServer(create_app(s, deps.sessions)) as server:
        yield server


@pytest.fixture
def log_text() -> Iterator[io.StringIO]:
    """cardshare's own JSON lines at DEBUG, as the receiver would write them to stderr."""
    stream = io.StringIO()
    root = logging.getLogger()
    level = root.level
    configure_logging("DEBUG", "json", stream)
    yield stream
    for handler in list(root.handlers):
        if handler.get_name() == "cardshare":
            root.removeHandler(handler)
    root.setLevel(level)


def chat_row(deps: Deps, chat_id: str | uuid.UUID) -> Any:
    with deps.sessions() as s:
        return s.execute(
            text("SELECT * FROM chats WHERE id = :c"), {"c": uuid.UUID(str(chat_id))}
        ).one_or_none()


def count(deps: Deps, table: str) -> int:
    with deps.sessions() as s:
        return int(s.execute(text(f"SELECT count(*) FROM {table}")).scalar_one())


def deliveries(deps: Deps, event_id: str) -> list[str]:
    with deps.sessions() as s:
        return list(
            s.execute(
                text("SELECT deliveries FROM webhook_events WHERE event_id = :e"), {"e": event_id}
            ).scalar_one()
        )


@pytest.mark.parametrize("version", ["2025-01-01", "2026-02-03"])
def test_message_sent_of_either_version_records_outbound_activity(
    receiver: ReceiverServer, sim: SimulatorAdmin, deps: Deps, version: Literal["2025-01-01", "2026-02-03"]
) -> None:
    chat = str(uuid.uuid4())
    sent = dt.datetime(2026, 3, 2, 15, 4, 4, 900_000, tzinfo=dt.UTC)
    answer = sim.deliver_webhook(
        receiver.url,
        SECRET,
        version=version,
        chat_id=chat,
        line=LINE,
        sent_at=sent.isoformat(),
        is_group=False,
    )
    assert (answer["status"], json.loads(answer["body"])) == (200, {"status": "recorded"})
    row = chat_row(deps, chat)
    assert (row.line_phone, row.service, row.is_group, row.opted_out) == (LINE, "iMessage", False, False)
    assert row.first_outbound_at == row.last_outbound_at == sent
    assert deliveries(deps, answer["event_id"]) == [f"{answer['webhook_id']}.{answer['timestamp']}"]


def test_a_linq_retry_is_answered_but_not_applied_again(
    receiver: ReceiverServer, world: World, deps: Deps, sim: SimulatorAdmin
) -> None:
    world.line(LINE)
    chat = world.chat(LINE)
    with transaction(deps.sessions) as s:
        mark_opted_out(s, chat)
    now = int(time.time())
    first = sim.deliver_webhook(
        receiver.url,
        SECRET,
        event_type="message.received",
        chat_id=str(chat),
        event_id="evt-1",
        timestamp=now,
        sent_at=dt.datetime.now(dt.UTC).isoformat(),
    )
    assert json.loads(first["body"]) == {"status": "recorded"}
    assert chat_row(deps, chat).opted_out is False
    # Later the recipient opts out again (403/2024 on a share) ...
    with transaction(deps.sessions) as s:
        mark_opted_out(s, chat)
    # ... and Linq retries the old event, signed anew: acknowledged, not applied.
    retry = sim.deliver_webhook(
        receiver.url,
        SECRET,
        event_type="message.received",
        chat_id=str(chat),
        event_id="evt-1",
        timestamp=now - 1,
    )
    assert (retry["status"], json.loads(retry["body"])) == (200, {"status": "duplicate"})
    assert chat_row(deps, chat).opted_out is True
    assert count(deps, "webhook_events") == 1
    assert deliveries(deps, "evt-1") == [f"evt-1.{now}", f"evt-1.{now - 1}"]


def test_an_exact_replay_is_refused_and_one_row_remains(
    receiver: ReceiverServer, deps: Deps, caplog: pytest.LogCaptureFixture
) -> None:
    spec = EventSpec(chat_id=str(uuid.uuid4()), event_id=str(uuid.uuid4()), sent_at=time.time() - 60)
    raw = json.dumps(build_event(spec)).encode()
    headers = signed_headers(SECRET, spec.event_id, int(time.time()), raw)
    assert httpx.post(receiver.url, content=raw, headers=headers).json() == {"status": "recorded"}
    with caplog.at_level(logging.WARNING, logger="cardshare.webhooks"):
        again = httpx.post(receiver.url, content=raw, headers=headers)
    assert again.status_code == 401
    assert count(deps, "webhook_events") == 1
    assert count(deps, "chats") == 1
    assert any("replayed" in str(getattr(r, "fields", {}).get("reason")) for r in caplog.records)


@pytest.mark.parametrize(
    ("options", "reason"),
    [
        ({"secret": "whsec_c29tZW9uZSBlbHNlJ3Mgc2VjcmV0"}, "matches none of the configured secrets"),
        ({"offset": -400}, "more than 5 minutes old"),
        ({"offset": +400}, "more than 5 minutes in the future"),
        ({"tamper": True}, "matches none of the configured secrets"),
        ({"standard": False}, "CARDSHARE_WEBHOOK_LEGACY_SIGNATURES is off"),
        ({"standard": False, "legacy": False}, "no signature headers"),
    ],
)
def test_bad_signatures_get_401_a_reason_and_write_nothing(
    receiver: ReceiverServer,
    sim: SimulatorAdmin,
    deps: Deps,
    caplog: pytest.LogCaptureFixture,
    options: dict[str, Any],
    reason: str,
) -> None:
    options = dict(options)
    secret = options.pop("secret", SECRET)
    if "offset" in options:
        options["timestamp"] = int(time.time()) + options.pop("offset")
    with caplog.at_level(logging.WARNING, logger="cardshare.webhooks"):
        answer = sim.deliver_webhook(receiver.url, secret, chat_id=str(uuid.uuid4()), **options)
    assert answer["status"] == 401
    assert count(deps, "chats") == 0
    assert count(deps, "webhook_events") == 0
    reasons = [
        getattr(r, "fields", {}).get("reason") for r in caplog.records if r.getMessage() == "webhook.rejected"
    ]
    assert len(reasons) == 1
    assert reasons[0] is not None
    assert reason in reasons[0]


def test_legacy_signatures_are_accepted_when_turned_on(
    legacy_receiver: ReceiverServer, sim: SimulatorAdmin, deps: Deps
) -> None:
    chat = str(uuid.uuid4())
    answer = sim.deliver_webhook(legacy_receiver.url, SECRET, chat_id=chat, standard=False)
    assert answer["status"] == 200
    assert chat_row(deps, chat) is not None


def test_unknown_event_types_get_2xx_and_are_ignored(
    receiver: ReceiverServer, sim: SimulatorAdmin, deps: Deps
) -> None:
    answer = sim.deliver_webhook(receiver.url, SECRET, event_type="message.read", chat_id=str(uuid.uuid4()))
    assert (answer["status"], json.loads(answer["body"])) == (200, {"status": "ignored"})
    assert count(deps, "chats") == count(deps, "webhook_events") == 0


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        (b"this is not json", "body is not JSON"),
        (
            b'{"event_type": "message.sent", "event_id": "m1", "data": {"chat": {"id": "nope"}}}',
            "is not a UUID",
        ),
        # Issue 19: an event naming no line is no longer malformed (it is kept pending, see
        # tests/acceptance/test_hardening_webhooks.py); a time before 2000 is.
        (
            b'{"event_type": "message.sent", "event_id": "m2", "data": {"chat_id": "%s", '
            b'"from": "+12223334444", "message": {"sent_at": "0001-01-01T00:00:00Z"}}}'
            % str(uuid.uuid4()).encode(),
            "before 2000",
        ),
    ],
)
def test_a_malformed_body_with_a_good_signature_gets_400(
    receiver: ReceiverServer, deps: Deps, raw: bytes, reason: str
) -> None:
    answer = httpx.post(
        receiver.url, content=raw, headers=signed_headers(SECRET, "wh-1", int(time.time()), raw)
    )
    assert answer.status_code == 400
    assert reason in answer.json()["error"]
    assert count(deps, "chats") == count(deps, "webhook_events") == 0


def test_inbound_clears_an_opt_out_only_if_it_is_newer(
    receiver: ReceiverServer, world: World, deps: Deps, sim: SimulatorAdmin
) -> None:
    world.line(LINE)
    chat = world.chat(LINE)
    with transaction(deps.sessions) as s:
        mark_opted_out(s, chat)
    old = dt.datetime.now(dt.UTC) - dt.timedelta(hours=1)
    sim.deliver_webhook(
        receiver.url, SECRET, event_type="message.received", chat_id=str(chat), sent_at=old.isoformat()
    )
    assert chat_row(deps, chat).opted_out is True
    new = dt.datetime.now(dt.UTC) + dt.timedelta(seconds=2)
    for version in ("2025-01-01", "2026-02-03"):
        with transaction(deps.sessions) as s:
            mark_opted_out(s, chat)
        sim.deliver_webhook(
            receiver.url,
            SECRET,
            event_type="message.received",
            version=version,
            chat_id=str(chat),
            sent_at=new.isoformat(),
        )
        assert chat_row(deps, chat).opted_out is False
        # An inbound STOP is itself an opt-out.
        sim.deliver_webhook(
            receiver.url,
            SECRET,
            event_type="message.received",
            version=version,
            chat_id=str(chat),
            sent_at=new.isoformat(),
            text="STOP",
        )
        assert chat_row(deps, chat).opted_out is True


def test_chat_created_records_the_chat_without_outbound(
    receiver: ReceiverServer, sim: SimulatorAdmin, deps: Deps
) -> None:
    chat = str(uuid.uuid4())
    sim.add_chats([{"id": chat, "line": LINE, "service": "iMessage", "is_group": True}])
    answer = sim.deliver_webhook(receiver.url, SECRET, event_type="chat.created", chat_id=chat)
    assert answer["status"] == 200
    row = chat_row(deps, chat)
    assert (row.line_phone, row.service, row.is_group, row.first_outbound_at) == (
        LINE,
        "iMessage",
        True,
        None,
    )


def _connections(servers: Servers, database: str, allow: bool) -> None:
    with psycopg.connect(servers.admin_dsn, autocommit=True) as conn:
        conn.execute(f'ALTER DATABASE "{database}" ALLOW_CONNECTIONS {str(allow).lower()}')
        if not allow:
            conn.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s", (database,)
            )


def test_a_database_outage_gives_503_and_the_retry_loses_nothing(
    receiver: ReceiverServer, sim: SimulatorAdmin, deps: Deps, servers: Servers, settings: Settings
) -> None:
    database = make_url(str(settings.database_url)).database
    assert database
    chat = str(uuid.uuid4())
    _connections(servers, database, allow=False)
    try:
        down = sim.deliver_webhook(receiver.url, SECRET, chat_id=chat, event_id="evt-outage")
    finally:
        _connections(servers, database, allow=True)
    assert down["status"] == 503
    retry = sim.deliver_webhook(
        receiver.url, SECRET, chat_id=chat, event_id="evt-outage", timestamp=int(time.time()) + 1
    )
    assert (retry["status"], json.loads(retry["body"])) == (200, {"status": "recorded"})
    assert chat_row(deps, chat).first_outbound_at is not None
    assert count(deps, "webhook_events") == 1


def test_the_receiver_never_logs_a_secret(
    receiver: ReceiverServer, sim: SimulatorAdmin, deps: Deps, log_text: io.StringIO
) -> None:
    chat = str(uuid.uuid4())
    sim.deliver_webhook(receiver.url, SECRET, chat_id=chat)
    sim.deliver_webhook(receiver.url, OTHER, chat_id=chat, event_id="evt-2")
    sim.deliver_webhook(receiver.url, "whsec_d3Jvbmcgc2VjcmV0IGhlcmU=", chat_id=chat)
    sim.deliver_webhook(receiver.url, SECRET, chat_id=chat, timestamp=int(time.time()) - 900)
    raw = b"{broken"
    httpx.post(receiver.url, content=raw, headers=signed_headers(SECRET, "wh-9", int(time.time()), raw))
    out = log_text.getvalue()
    assert "webhook.rejected" in out
    assert "webhook.recorded" in out
    assert "webhook.malformed" in out
    for secret in (SECRET, OTHER):
        assert secret not in out
        assert secret.removeprefix("whsec_") not in out


def due_now(deps: Deps) -> list[str]:
    """Run a sweep; the chats it would enqueue."""
    publish = Collector()
    sweep(deps, publish, drained)
    return [str(c) for c in publish.ids]


def test_end_to_end_a_delivered_message_sent_gets_the_chat_its_card_once(
    receiver: ReceiverServer, world: World, sim: SimulatorAdmin, deps: Deps, today: dt.date
) -> None:
    world.line(LINE)
    chat = str(uuid.uuid4())
    sim.add_chats([{"id": chat, "line": LINE, "service": "iMessage"}])  # Linq knows it; cardshare not yet
    assert due_now(deps) == []
    answer = sim.deliver_webhook(
        receiver.url, SECRET, chat_id=chat, sent_at=dt.datetime.now(dt.UTC).isoformat()
    )
    assert answer["status"] == 200
    assert due_now(deps) == [chat]
    assert share_chat(uuid.UUID(chat), today, deps).outcome is Outcome.SHARED
    # More outbound messages the same day change nothing: once a day.
    sim.deliver_webhook(receiver.url, SECRET, chat_id=chat, sent_at=dt.datetime.now(dt.UTC).isoformat())
    assert due_now(deps) == []
    assert sim.share_count(chat) == 1
    assert sim.shares()["total_accepted"] == 1
