"""Issue 19, point 7: the simulator grows the variants Linq's contract allows, and cardshare
handles each through the real CLI, worker path and receiver."""

from __future__ import annotations

import datetime as dt
import json
import uuid
from collections.abc import Iterator
from typing import Any, Literal

import httpx
import jsonschema
import pytest
from sqlalchemy import text

from tests.support import openapi
from tests.support.cli import cardshare
from tests.support.receiver import SECRET, ReceiverServer
from tests.support.world import World
from worker.config import Secret, Settings
from worker.deps import Deps
from worker.ingest.webhooks import create_app
from worker.simulator import SimulatorAdmin
from worker.simulator.client import MessageSpec
from worker.simulator.state import SimState
from worker.simulator.webhooks import EventSpec, build_event

pytestmark = pytest.mark.acceptance

LINE = "+12223334444"


def _validate(doc: dict[str, Any], name: str) -> None:
    """Valid by Linq's schema for that webhook (objects open, as the document leaves them)."""
    jsonschema.Draft7Validator(openapi.schema_for(name, closed=False)).validate(doc)


@pytest.mark.parametrize("version", ["2025-01-01", "2026-02-03"])
@pytest.mark.parametrize(
    "event_type", ["message.delivered", "message.read", "message.failed", "message.sent"]
)
def test_status_events_have_the_shapes_of_linq_s_schema(event_type: str, version: str) -> None:
    spec = EventSpec(event_type=event_type, version=version, chat_id=str(uuid.uuid4()), sent_at=1.8e9)
    doc = build_event(spec)
    _validate(json.loads(json.dumps(doc)), f"{event_type}.v{version[:4]}")


def test_nulls_where_the_schema_allows_them_validate_too() -> None:
    nullable = {
        "2025-01-01": ("recipient_handle", "recipient_phone", "service", "sent_at"),
        "2026-02-03": ("owner_handle", "sent_at"),
    }
    for version, nulls in nullable.items():
        for event_type in ("message.sent", "message.received"):
            spec = EventSpec(
                event_type=event_type, version=version, chat_id=str(uuid.uuid4()), sent_at=1.8e9, nulls=nulls
            )
            _validate(build_event(spec), f"{event_type}.v{version[:4]}")


def test_message_parts_carry_reactions_in_their_real_shape() -> None:
    spec = EventSpec(chat_id=str(uuid.uuid4()), sent_at=1.8e9, reactions=("love", "custom"))
    doc = build_event(spec)
    reactions = doc["data"]["parts"][0]["reactions"]
    assert [r["type"] for r in reactions] == ["love", "custom"]
    assert reactions[1]["custom_emoji"]
    # GET /v3/chats/{id}/messages: TextPartResponse with its required, nullable `reactions`.
    state = SimState()
    state.add_line(LINE)
    state.add_chats(
        [
            {
                "line": LINE,
                "id": "c1",
                "messages": [
                    {"sent_at": "2026-03-02T15:04:05Z", "reactions": ["like"]},
                    {"sent_at": "2026-03-02T15:04:06Z"},
                ],
            }
        ]
    )
    messages, _ = state.list_messages("c1", 50, 0)
    assert [m["parts"][0]["reactions"] for m in messages][1][0]["type"] == "like"
    assert messages[0]["parts"][0]["reactions"] is None


def test_is_me_null_on_chat_created_handles() -> None:
    doc = build_event(
        EventSpec(event_type="chat.created", chat_id=str(uuid.uuid4()), sent_at=1.8e9, nulls=("is_me",))
    )
    assert all(h["is_me"] is None for h in doc["data"]["handles"])
    _validate(doc, "chat.created.v2026")


def test_the_documented_default_page_sizes(world: World, settings: Settings) -> None:
    world.line(LINE)
    chat = str(uuid.uuid4())
    messages: list[MessageSpec] = [
        {"is_from_me": i % 2 == 0, "sent_at": f"2026-03-02T15:{i // 60:02d}:{i % 60:02d}Z"} for i in range(70)
    ]
    world.sim.add_chats([{"id": chat, "line": LINE, "messages": messages}])
    world.sim.add_chats([{"line": LINE} for _ in range(30)])
    headers = {"Authorization": f"Bearer {settings.linq_api_key.get()}"}
    base = settings.linq_base_url
    got = httpx.get(f"{base}/v3/chats/{chat}/messages", headers=headers).json()
    assert len(got["messages"]) == 50  # GET /v3/chats/{id}/messages: default limit 50
    chats = httpx.get(f"{base}/v3/chats", params={"from": LINE}, headers=headers).json()
    assert len(chats["chats"]) == 20  # GET /v3/chats: default limit 20


def test_a_share_into_an_opted_out_chat_gets_403_2024_and_marks_it(
    world: World, deps: Deps, settings: Settings
) -> None:
    """The recipient opted out at Linq, whatever the chat's health says: the share alone tells."""
    world.line(LINE)
    chat = uuid.uuid4()
    world.chat(LINE, chat_id=chat, in_sim=False)
    world.sim.add_chats(
        [
            {
                "id": str(chat),
                "line": LINE,
                "health": "HEALTHY",
                "opted_out": True,
                "messages": [{"is_from_me": True, "sent_at": "2026-03-02T15:04:05Z"}],
            }
        ]
    )
    done = cardshare(settings, "share", str(chat), "--wait")
    assert done.returncode == 1, done.stderr
    assert "opted_out (HTTP 403/2024)" in done.stdout
    assert world.sim.share_count(str(chat)) == 0
    with deps.sessions() as s:
        assert s.execute(text("SELECT opted_out FROM chats WHERE id = :c"), {"c": chat}).scalar_one() is True


def test_patch_on_an_inactive_card_is_404_2012(world: World, settings: Settings) -> None:
    world.line(LINE, active=False)
    done = cardshare(settings, "card", "update", "--phone", LINE, "--first", "Acme2")
    assert done.returncode == 1, done.stderr
    assert "404" in done.stderr
    assert "2012" in done.stderr
    assert "card create" in done.stderr
    assert "Traceback" not in done.stderr
    assert [c["first_name"] for c in world.sim.cards()] == ["Acme"]


@pytest.fixture
def receiver(settings: Settings, deps: Deps) -> Iterator[ReceiverServer]:
    app = create_app(settings.replace(webhook_secrets=(Secret(SECRET),)), deps.sessions)
    with ReceiverServer(app) as server:
        yield server


@pytest.mark.parametrize("version", ["2025-01-01", "2026-02-03"])
def test_every_variant_the_simulator_delivers_is_taken_by_the_real_receiver(
    version: Literal["2025-01-01", "2026-02-03"],
    receiver: ReceiverServer,
    world: World,
    deps: Deps,
    sim: SimulatorAdmin,
) -> None:
    """Status events, reactions and the schema's nulls, signed by the simulator and POSTed to the
    receiver: none is answered 4xx/5xx, and the outbound ones land on the known chat."""
    world.line(LINE)
    chat = world.chat(LINE, outbound_at=False)
    nulls = ["owner_handle", "sent_at"] if version == "2026-02-03" else ["recipient_handle", "service"]
    now = dt.datetime.now(dt.UTC)
    for n, event_type in enumerate(
        ["message.sent", "message.delivered", "message.read", "message.failed", "message.received"]
    ):
        answer = sim.deliver_webhook(
            receiver.url,
            SECRET,
            event_type=event_type,
            version=version,
            chat_id=str(chat),
            nulls=nulls,
            reactions=["love", "custom"],
            sent_at=(now - dt.timedelta(minutes=10 - n)).isoformat(),
        )
        assert answer["status"] == 200, (event_type, answer)
        assert json.loads(answer["body"])["status"] in {"recorded", "duplicate", "ignored"}, answer
    with deps.sessions() as s:
        row = s.execute(
            text("SELECT line_phone, last_outbound_at FROM chats WHERE id = :c"), {"c": chat}
        ).one()
        pending = s.execute(text("SELECT count(*) FROM webhook_pending")).scalar_one()
    assert row.line_phone == LINE
    assert row.last_outbound_at is not None  # the message.sent with null handles was recorded
    assert pending == 0  # a known chat resolves its line: nothing waits
