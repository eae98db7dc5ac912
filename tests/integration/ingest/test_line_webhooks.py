"""Events about lines and the account through the real receiver on a socket, signed by the
simulator as Linq signs them: a line's reputation and status (and what that releases), card
changes handed to a refresh, and warnings kept until acknowledged or superseded."""

from __future__ import annotations

import datetime as dt
import io
import json
import logging
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from linq.types import PhoneNumberStatusUpdatedWebhookEvent
from linq.types.api_token_expired_webhook_event import APITokenExpiredWebhookEvent
from prometheus_client import REGISTRY
from sqlalchemy import text

from tests.support.receiver import SECRET, ReceiverServer
from tests.support.sweeps import Collector, release, sweep
from tests.support.world import World
from worker.cards.refresh import refresh_card
from worker.config import Secret, Settings
from worker.deps import Deps
from worker.ingest.webhooks import create_app
from worker.logs import configure as configure_logging
from worker.simulator import SimulatorAdmin
from worker.simulator.webhooks import ACCOUNT_EVENTS, build_account_event, signed_headers
from worker.store.session import transaction
from worker.store.warnings import acknowledge, warnings

LINE = "+12223334444"


class Refreshes:
    """Stands in for the broker: what the receiver handed over, or a failure to hand it over."""

    def __init__(self) -> None:
        self.lines: list[str] = []
        self.fail = False

    def __call__(self, line: str) -> None:
        if self.fail:
            raise ConnectionError("broker down")
        self.lines.append(line)


@pytest.fixture
def refreshes() -> Refreshes:
    return Refreshes()


@pytest.fixture
def receiver(settings: Settings, deps: Deps, refreshes: Refreshes) -> Iterator[ReceiverServer]:
    app = create_app(
        settings.replace(webhook_secrets=(Secret(SECRET),)), deps.sessions, refresh_card=refreshes
    )
    with ReceiverServer(app) as server:
        yield server


@pytest.fixture
def log_text() -> Iterator[io.StringIO]:
    stream = io.StringIO()
    root = logging.getLogger()
    level = root.level
    configure_logging("INFO", "json", stream)
    yield stream
    for handler in list(root.handlers):
        if handler.get_name() == "cardshare":
            root.removeHandler(handler)
    root.setLevel(level)


def line_row(deps: Deps, phone: str = LINE) -> Any:
    with deps.sessions() as s:
        return s.execute(text("SELECT * FROM lines WHERE phone_number = :p"), {"p": phone}).one()


def at(seconds_ago: float) -> float:
    return time.time() - seconds_ago


def test_a_status_update_holds_the_line_and_clearing_it_releases_today(
    world: World, deps: Deps, sim: SimulatorAdmin, receiver: ReceiverServer
) -> None:
    line = world.line()
    chat = world.chat(line)
    sent = sim.deliver_webhook(
        receiver.url,
        SECRET,
        event_type="phone_number.status_updated",
        line=line,
        reputation="CRITICAL",
        line_status="FLAGGED",
        previous_reputation="HEALTHY",
        previous_status="ACTIVE",
        changed_at=at(0),
    )
    assert sent["status"] == 200, sent
    row = line_row(deps)
    assert (row.reputation, row.linq_status) == ("CRITICAL", "FLAGGED")
    # An older report, delivered late (Linq retries for ~30 minutes), changes nothing.
    late = sim.deliver_webhook(
        receiver.url,
        SECRET,
        event_type="phone_number.status_updated",
        line=line,
        reputation="HEALTHY",
        line_status="ACTIVE",
        changed_at=at(600),
    )
    assert late["status"] == 200
    assert (line_row(deps).reputation, line_row(deps).linq_status) == ("CRITICAL", "FLAGGED")
    # The sweep holds the line's chat (and reads CRITICAL from Linq itself too).
    sim.set_line_state(line, reputation="CRITICAL")
    publish = Collector()
    sweep(deps, publish)
    assert publish.ids == []
    with deps.sessions() as s:
        reason = s.execute(text("SELECT reason FROM share_days WHERE chat_id = :c"), {"c": chat}).scalar_one()
    assert reason.startswith("line_flagged:")
    # Linq clears the line: the webhook re-arms its held chat, the next release pass sends it.
    sim.set_line_state(line, reputation="HEALTHY", status="ACTIVE")
    cleared = sim.deliver_webhook(
        receiver.url,
        SECRET,
        event_type="phone_number.status_updated",
        line=line,
        reputation="HEALTHY",
        line_status="ACTIVE",
        previous_reputation="CRITICAL",
        previous_status="FLAGGED",
        changed_at=at(0),
    )
    assert cleared["status"] == 200
    out = Collector()
    release(deps, out)
    assert out.ids == [chat]


def test_the_simulator_sends_status_changes_over_time_by_itself(
    world: World, deps: Deps, sim: SimulatorAdmin, receiver: ReceiverServer
) -> None:
    line = world.line()
    sim.set_webhook_target(receiver.url, SECRET)
    sim.schedule_line_changes(
        [
            {"phone_number": line, "after_s": 0.2, "reputation": "AT_RISK"},
            {"phone_number": line, "after_s": 0.6, "status": "FLAGGED"},
        ]
    )
    deadline = time.monotonic() + 10
    while len([e for e in sim.webhooks_sent() if e.get("status") == 200]) < 2:
        assert time.monotonic() < deadline, sim.webhooks_sent()
        time.sleep(0.1)
    row = line_row(deps)
    assert (row.reputation, row.linq_status) == ("AT_RISK", "FLAGGED")
    sent = sim.webhooks_sent()
    assert [e["data"]["new_reputation"] for e in sent] == ["AT_RISK", "AT_RISK"]
    assert [e["data"]["previous_status"] for e in sent] == ["ACTIVE", "ACTIVE"]


def test_card_events_hand_the_line_to_a_refresh_and_a_broker_outage_asks_linq_to_retry(
    world: World, deps: Deps, sim: SimulatorAdmin, receiver: ReceiverServer, refreshes: Refreshes
) -> None:
    line = world.line()
    sim.set_webhook_target(receiver.url, SECRET)
    sim.delete_card(line)
    deadline = time.monotonic() + 10
    while not refreshes.lines:
        assert time.monotonic() < deadline, sim.webhooks_sent()
        time.sleep(0.05)
    assert refreshes.lines == [line]
    # What the refresh task does with it: GET /v3/contact_card says the card is gone.
    assert line_row(deps).card_active
    assert refresh_card(deps, line).active is False
    assert not line_row(deps).card_active
    # The broker is down: nothing is recorded and Linq is asked to retry (503).
    refreshes.fail = True
    answer = sim.deliver_webhook(
        receiver.url, SECRET, event_type="contact_card.updated", line=line, event_id="e-1"
    )
    assert answer["status"] == 503
    with deps.sessions() as s:
        assert s.execute(text("SELECT count(*) FROM webhook_events WHERE event_id = 'e-1'")).scalar_one() == 0
    refreshes.fail = False
    sim.add_card(line, "Acme")
    again = sim.deliver_webhook(
        receiver.url, SECRET, event_type="contact_card.updated", line=line, event_id="e-1"
    )
    assert again["status"] == 200
    assert refreshes.lines == [line, line]
    assert refresh_card(deps, line).active is True
    assert line_row(deps).card_active


def test_account_warnings_are_logged_counted_and_kept_until_acknowledged_or_superseded(
    deps: Deps, sim: SimulatorAdmin, receiver: ReceiverServer, log_text: io.StringIO
) -> None:
    before = _warnings_metric("api_token.expiry_scheduled")
    now = int(time.time())
    first = sim.deliver_webhook(
        receiver.url,
        SECRET,
        event_type="api_token.expiry_scheduled",
        token_id="tok_1",
        expires_at="2026-12-31T00:00:00Z",
        event_id="w-1",
        timestamp=now,
    )
    assert first["status"] == 200
    assert _warnings_metric("api_token.expiry_scheduled") == before + 1
    with transaction(deps.sessions) as s:
        [open_] = warnings(s)
    assert open_.kind == "api_token.expiry_scheduled"
    assert "rotate LINQ_API_V3_API_KEY" in open_.summary
    lines = [json.loads(x) for x in log_text.getvalue().splitlines()]
    errors = [x for x in lines if x.get("event") == "account.warning"]
    assert len(errors) == 1
    assert errors[0]["level"] == "error"
    # Linq's retry of the same event (same id, a later signature timestamp: a delivery signed in
    # the same second would be the very same signed request, a replay) is a duplicate: no second
    # warning.
    retry = sim.deliver_webhook(
        receiver.url,
        SECRET,
        event_type="api_token.expiry_scheduled",
        token_id="tok_1",
        event_id="w-1",
        timestamp=now + 1,
    )
    assert retry["status"] == 200
    assert json.loads(retry["body"]) == {"status": "duplicate"}
    # The token expires: the newer warning supersedes the older one.
    sim.deliver_webhook(
        receiver.url, SECRET, event_type="api_token.expired", token_id="tok_1", event_id="w-2"
    )
    with transaction(deps.sessions) as s:
        [expired] = warnings(s)
        every = warnings(s, include_closed=True)
    assert expired.kind == "api_token.expired"
    assert {w.kind: w.resolution for w in every} == {
        "api_token.expired": None,
        "api_token.expiry_scheduled": "superseded by api_token.expired",
    }
    # A disabled subscription, re-enabled later: resolved by Linq's own event.
    sim.deliver_webhook(
        receiver.url, SECRET, event_type="webhook_subscription.disabled", subscription_id="sub_9"
    )
    sim.deliver_webhook(
        receiver.url, SECRET, event_type="webhook_subscription.enabled", subscription_id="sub_9"
    )
    with transaction(deps.sessions) as s:
        assert [w.kind for w in warnings(s)] == ["api_token.expired"]
        assert acknowledge(s, warning_id=expired.id, by="ops@test") == 1
    with transaction(deps.sessions) as s:
        assert warnings(s) == []


def test_a_malformed_line_event_is_400_and_records_nothing(deps: Deps, receiver: ReceiverServer) -> None:
    body = json.dumps(
        {
            "event_type": "phone_number.status_updated",
            "event_id": "bad-1",
            "data": {"phone_number": "not a number", "new_reputation": "GREAT", "new_status": "ACTIVE"},
        }
    ).encode()
    headers = signed_headers(SECRET, "bad-1", int(time.time()), body)
    answer = httpx.post(receiver.url, content=body, headers=headers)
    assert answer.status_code == 400
    assert "data.phone_number" in answer.json()["error"]
    with deps.sessions() as s:
        assert s.execute(text("SELECT count(*) FROM webhook_events")).scalar_one() == 0


def _warnings_metric(kind: str) -> float:
    value = REGISTRY.get_sample_value("cardshare_account_warnings_total", {"kind": kind})
    return float(value or 0.0)


def test_status_updates_are_shaped_as_the_sdk_types_them() -> None:
    status = build_account_event({"event_type": "phone_number.status_updated", "reputation": "CRITICAL"})
    PhoneNumberStatusUpdatedWebhookEvent.model_validate(status)
    for event_type in ACCOUNT_EVENTS[1:]:
        APITokenExpiredWebhookEvent.model_validate(build_account_event({"event_type": event_type}))
    assert dt.datetime.fromisoformat(status["data"]["changed_at"].replace("Z", "+00:00"))
