"""The Linq simulator, driven over real HTTP with the official SDK (strict validation on).

Rules that depend on time run against a second server whose clock the test moves, so nothing
here sleeps for more than about a second.
"""

from __future__ import annotations

import asyncio
import re
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest
from linq import (
    APIStatusError,
    APITimeoutError,
    AuthenticationError,
    BadRequestError,
    ConflictError,
    InternalServerError,
    LinqAPIV3,
    NotFoundError,
    PermissionDeniedError,
    RateLimitError,
)

from worker.simulator import SimulatorAdmin, SimulatorAdminError, SimulatorServer
from worker.simulator.client import ChatSpec, MessageSpec, admin_root
from worker.simulator.state import SimState, share_error

KEY = "sim-test-key"
LINE = "+12223334444"
LINE2 = "+13334445555"
OTHER = "+19998887777"  # never one of the account's lines
TRACE = re.compile(r"^[0-9a-f]{32}$")
SHARE_ROUTE = "POST /v3/chats/{chat_id}/share_contact_card"
T0 = 1_772_000_000.0


class FakeClock:
    """A clock the test moves by hand; the server thread only reads it."""

    def __init__(self, now: float = T0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


# ---- fixtures -------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def server() -> Iterator[SimulatorServer]:
    with SimulatorServer(KEY) as srv:
        yield srv


@pytest.fixture(scope="module")
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture(scope="module")
def clocked_server(clock: FakeClock) -> Iterator[SimulatorServer]:
    with SimulatorServer(KEY, clock=clock) as srv:
        yield srv


@pytest.fixture
def admin(server: SimulatorServer) -> SimulatorAdmin:
    server.admin.reset()
    return server.admin


@pytest.fixture
def clocked(clocked_server: SimulatorServer, clock: FakeClock) -> SimulatorAdmin:
    clocked_server.admin.reset()
    clock.now = T0
    return clocked_server.admin


@pytest.fixture
def make_linq() -> Iterator[Callable[..., LinqAPIV3]]:
    clients: list[LinqAPIV3] = []

    def make(srv: SimulatorServer, api_key: str = KEY, timeout: float = 5.0) -> LinqAPIV3:
        client = LinqAPIV3(
            api_key=api_key,
            base_url=srv.base_url,
            max_retries=0,
            _strict_response_validation=True,
            http_client=httpx.Client(timeout=timeout),
        )
        clients.append(client)
        return client

    yield make
    for client in clients:
        client.close()


@pytest.fixture
def linq(server: SimulatorServer, admin: SimulatorAdmin, make_linq: Callable[..., LinqAPIV3]) -> LinqAPIV3:
    return make_linq(server)


@pytest.fixture
def clocked_linq(
    clocked_server: SimulatorServer, clocked: SimulatorAdmin, make_linq: Callable[..., LinqAPIV3]
) -> LinqAPIV3:
    return make_linq(clocked_server)


@pytest.fixture
def http(server: SimulatorServer, admin: SimulatorAdmin) -> Iterator[httpx.Client]:
    headers = {"Authorization": f"Bearer {KEY}"}
    with httpx.Client(base_url=server.base_url, headers=headers, timeout=5.0) as client:
        yield client


# ---- helpers --------------------------------------------------------------------------------
def chat_spec(
    line: str = LINE,
    *,
    service: Any = "iMessage",
    outbound: bool = True,
    chat_id: str | None = None,
    to: str | None = None,
) -> ChatSpec:
    messages: list[MessageSpec] = [{"is_from_me": False, "sent_at": "2026-03-01T09:00:00Z"}]
    if outbound:
        messages.append({"is_from_me": True, "sent_at": "2026-03-01T10:00:00Z"})
    spec: ChatSpec = {
        "line": line,
        "id": chat_id or str(uuid.uuid4()),
        "service": service,
        "messages": messages,
    }
    if to is not None:
        spec["to"] = to
    return spec


def seed_chat(admin: SimulatorAdmin, line: str = LINE, **kw: Any) -> str:
    spec = chat_spec(line, **kw)
    admin.add_chats([spec])
    return spec["id"]


def error_json(exc: APIStatusError) -> dict[str, Any]:
    body = exc.response.json()
    assert isinstance(body, dict)
    return body


def last_event(admin: SimulatorAdmin) -> dict[str, Any]:
    return admin.share_events()[-1]


# ---- auth, envelopes, trace ids ----------------------------------------------------------------
def test_wrong_token_is_401_2004_in_the_v3_envelope(
    server: SimulatorServer, admin: SimulatorAdmin, make_linq: Callable[..., LinqAPIV3]
) -> None:
    with pytest.raises(AuthenticationError) as caught:
        make_linq(server, api_key="wrong").phone_numbers.list()
    exc = caught.value
    assert (exc.status_code, exc.code) == (401, 2004)
    body = error_json(exc)
    assert body["success"] is False
    assert body["error"]["status"] == 401
    assert body["error"]["doc_url"].endswith("/2xxx/2004/")
    assert TRACE.match(body["trace_id"])
    assert exc.response.headers["X-Trace-ID"] == body["trace_id"]


def test_missing_authorization_is_401(server: SimulatorServer, admin: SimulatorAdmin) -> None:
    with httpx.Client(base_url=server.base_url, timeout=5.0) as bare:
        response = bare.post(f"/v3/chats/{uuid.uuid4()}/share_contact_card")
    assert response.status_code == 401
    assert response.json()["error"]["code"] == 2004
    assert admin.shares(events=True)["events"] == []  # refused before any rule ran


def test_every_response_has_a_fresh_trace_id(http: httpx.Client) -> None:
    ids = [http.get("/v3/phone_numbers").headers["X-Trace-ID"] for _ in range(3)]
    ids.append(http.get("/v3/no/such/route").headers["X-Trace-ID"])
    assert all(TRACE.match(i) for i in ids)
    assert len(set(ids)) == len(ids)


def test_unknown_route_answers_in_the_v3_envelope(http: httpx.Client) -> None:
    response = http.get("/v3/no/such/route")
    assert response.status_code == 404
    assert response.json()["success"] is False


# ---- phone numbers ------------------------------------------------------------------------------
def test_phone_numbers_lists_lines(linq: LinqAPIV3, admin: SimulatorAdmin) -> None:
    admin.add_line(LINE)
    admin.add_line(LINE2, line_type="RCS", reputation="AT_RISK")
    numbers = {n.phone_number: n for n in linq.phone_numbers.list().phone_numbers}
    assert set(numbers) == {LINE, LINE2}
    assert numbers[LINE].line_type == "iMessage"
    assert numbers[LINE].reputation.status == "HEALTHY"
    assert numbers[LINE2].line_type == "RCS"
    assert numbers[LINE2].reputation.status == "AT_RISK"
    assert numbers[LINE].id != numbers[LINE2].id


# ---- contact cards: read ------------------------------------------------------------------------
def test_get_cards_lists_inactive_ones_and_filters(linq: LinqAPIV3, admin: SimulatorAdmin) -> None:
    admin.add_card(LINE, "Acme", last_name="Support", image_url="https://cdn.example.com/a.jpg")
    admin.add_card(LINE2, "Acme", is_active=False)
    cards = {c.phone_number: c for c in linq.contact_card.retrieve().contact_cards}
    assert cards[LINE].is_active is True
    assert cards[LINE].last_name == "Support"
    assert cards[LINE2].is_active is False
    assert cards[LINE2].last_name is None
    only = linq.contact_card.retrieve(phone_number=LINE2).contact_cards
    assert [(c.phone_number, c.is_active) for c in only] == [(LINE2, False)]


def test_get_card_errors(linq: LinqAPIV3, admin: SimulatorAdmin) -> None:
    with pytest.raises(BadRequestError) as bad:
        linq.contact_card.retrieve(phone_number="2223334444")
    assert bad.value.code == 1002
    with pytest.raises(NotFoundError) as missing:
        linq.contact_card.retrieve(phone_number=OTHER)
    assert missing.value.code == 2012


# ---- contact cards: write -----------------------------------------------------------------------
def test_post_card_creates_an_active_card(linq: LinqAPIV3, admin: SimulatorAdmin) -> None:
    admin.add_line(LINE)
    card = linq.contact_card.create(first_name="Acme", last_name="Support", phone_number=LINE)
    assert (card.phone_number, card.first_name, card.last_name, card.is_active) == (
        LINE,
        "Acme",
        "Support",
        True,
    )
    assert [c.first_name for c in linq.contact_card.retrieve(phone_number=LINE).contact_cards] == ["Acme"]


def test_post_card_errors(linq: LinqAPIV3, admin: SimulatorAdmin, http: httpx.Client) -> None:
    admin.add_card(LINE, "Acme")
    missing_name = http.post("/v3/contact_card", json={"phone_number": LINE})
    assert (missing_name.status_code, missing_name.json()["error"]["code"]) == (400, 1001)
    not_json = http.post("/v3/contact_card", content=b"{nope", headers={"Content-Type": "application/json"})
    assert (not_json.status_code, not_json.json()["error"]["code"]) == (400, 1003)
    with pytest.raises(BadRequestError) as bad_phone:
        linq.contact_card.create(first_name="Acme", phone_number="+0123")
    assert bad_phone.value.code == 1002
    with pytest.raises(PermissionDeniedError) as not_ours:
        linq.contact_card.create(first_name="Acme", phone_number=OTHER)
    assert not_ours.value.code == 2005
    with pytest.raises(ConflictError) as active:
        linq.contact_card.create(first_name="Other", phone_number=LINE)
    assert active.value.code == 2014
    assert [c["first_name"] for c in admin.cards()] == ["Acme"]


def test_post_overwrites_an_inactive_card(linq: LinqAPIV3, admin: SimulatorAdmin) -> None:
    admin.add_card(LINE, "Old", last_name="Name", is_active=False)
    card = linq.contact_card.create(first_name="New", phone_number=LINE)
    assert (card.first_name, card.last_name, card.is_active) == ("New", None, True)


def test_patch_merges_only_given_fields(linq: LinqAPIV3, admin: SimulatorAdmin) -> None:
    admin.add_card(LINE, "Acme", last_name="Support", image_url="https://cdn.example.com/a.jpg")
    card = linq.contact_card.update(phone_number=LINE, first_name="Beta")
    assert (card.first_name, card.last_name, card.image_url) == (
        "Beta",
        "Support",
        "https://cdn.example.com/a.jpg",
    )
    card = linq.contact_card.update(phone_number=LINE, last_name="Desk")
    assert (card.first_name, card.last_name, card.is_active) == ("Beta", "Desk", True)


def test_patch_errors(linq: LinqAPIV3, admin: SimulatorAdmin) -> None:
    admin.add_line(LINE)
    with pytest.raises(NotFoundError) as missing:
        linq.contact_card.update(phone_number=LINE, first_name="X")
    assert missing.value.code == 2012
    with pytest.raises(BadRequestError) as bad_phone:
        linq.contact_card.update(phone_number="12-34", first_name="X")
    assert bad_phone.value.code == 1002


def test_card_writes_share_one_budget_per_number(
    linq: LinqAPIV3, admin: SimulatorAdmin, http: httpx.Client
) -> None:
    admin.add_line(LINE)
    admin.add_line(LINE2)
    assert http.post("/v3/contact_card", json={"phone_number": LINE}).status_code == 400  # not counted
    linq.contact_card.create(first_name="A", phone_number=LINE)  # 1
    linq.contact_card.update(phone_number=LINE, first_name="B")  # 2
    with pytest.raises(ConflictError):
        linq.contact_card.create(first_name="C", phone_number=LINE)  # 3: refused, but it counts
    with pytest.raises(RateLimitError) as limited:
        linq.contact_card.update(phone_number=LINE, first_name="D")
    exc = limited.value
    assert exc.code == 1007
    assert exc.retry_after is not None
    assert 595 <= exc.retry_after <= 600
    assert exc.response.headers["Retry-After"] == str(exc.retry_after)
    assert linq.contact_card.retrieve(phone_number=LINE).contact_cards[0].first_name == "B"
    assert linq.contact_card.create(first_name="Z", phone_number=LINE2).is_active  # another number's budget


def test_card_write_budget_reopens_as_the_oldest_write_leaves(
    clocked_linq: LinqAPIV3, clocked: SimulatorAdmin, clock: FakeClock
) -> None:
    clocked.add_card(LINE, "A")
    for step in (0, 100, 100):  # writes at t=0, 100, 200
        clock.advance(step)
        clocked_linq.contact_card.update(phone_number=LINE, first_name=f"n{step}")
    clock.advance(50)  # t=250: the write at t=0 leaves the window at t=600
    with pytest.raises(RateLimitError) as limited:
        clocked_linq.contact_card.update(phone_number=LINE, first_name="late")
    assert limited.value.retry_after == 350
    assert limited.value.response.headers["Retry-After"] == "350"
    clock.advance(349.5)
    with pytest.raises(RateLimitError) as almost:
        clocked_linq.contact_card.update(phone_number=LINE, first_name="late")
    assert almost.value.retry_after == 1  # 0.5 s rounds up, never 0
    clock.advance(0.5)
    assert clocked_linq.contact_card.update(phone_number=LINE, first_name="late").first_name == "late"


def test_configured_write_limit(linq: LinqAPIV3, admin: SimulatorAdmin) -> None:
    assert admin.configure(card_write_limit=1)["card_write_limit"] == 1
    admin.add_card(LINE, "A")
    linq.contact_card.update(phone_number=LINE, first_name="B")
    with pytest.raises(RateLimitError):
        linq.contact_card.update(phone_number=LINE, first_name="C")


# ---- card activation ----------------------------------------------------------------------------
def test_on_next_read_card_is_inactive_until_a_get(linq: LinqAPIV3, admin: SimulatorAdmin) -> None:
    admin.add_line(LINE, card_activation="on_next_read")
    chat_id = seed_chat(admin)
    assert linq.contact_card.create(first_name="Acme", phone_number=LINE).is_active is False
    assert [c["is_active"] for c in admin.cards()] == [False]
    with pytest.raises(NotFoundError) as inactive:
        linq.chats.share_contact_card(chat_id)
    assert inactive.value.code == 2012
    assert [c.is_active for c in linq.contact_card.retrieve().contact_cards] == [True]
    linq.chats.share_contact_card(chat_id)
    assert admin.share_count(chat_id) == 1


def test_never_activating_line_keeps_cards_inactive(linq: LinqAPIV3, admin: SimulatorAdmin) -> None:
    admin.add_line(LINE, card_activation="never")
    chat_id = seed_chat(admin)
    assert linq.contact_card.create(first_name="Acme", phone_number=LINE).is_active is False
    for _ in range(2):
        assert [c.is_active for c in linq.contact_card.retrieve().contact_cards] == [False]
    with pytest.raises(NotFoundError):
        linq.chats.share_contact_card(chat_id)


def test_admin_can_flip_a_card_inactive_then_active(linq: LinqAPIV3, admin: SimulatorAdmin) -> None:
    chat_id = seed_chat(admin)
    admin.add_card(LINE, "Acme", is_active=False)
    with pytest.raises(NotFoundError):
        linq.chats.share_contact_card(chat_id)
    admin.add_card(LINE, "Acme", is_active=True)
    linq.chats.share_contact_card(chat_id)
    assert [e["outcome"] for e in admin.share_events()] == ["card_inactive", "accepted"]


# ---- sharing ------------------------------------------------------------------------------------
def test_share_answers_204_without_a_body(http: httpx.Client, admin: SimulatorAdmin) -> None:
    admin.add_card(LINE, "Acme")
    chat_id = seed_chat(admin)
    response = http.post(f"/v3/chats/{chat_id}/share_contact_card")
    assert response.status_code == 204
    assert response.content == b""
    event = last_event(admin)
    assert event["outcome"] == "accepted"
    assert event["trace_id"] == response.headers["X-Trace-ID"]
    assert (event["effective"], event["responded"], event["status"]) == (True, True, 204)


def test_share_error_paths_in_order(linq: LinqAPIV3, admin: SimulatorAdmin) -> None:
    with pytest.raises(NotFoundError) as unknown:
        linq.chats.share_contact_card(str(uuid.uuid4()))
    assert unknown.value.code == 2001
    chat_id = seed_chat(admin)
    with pytest.raises(NotFoundError) as no_card:
        linq.chats.share_contact_card(chat_id)
    assert no_card.value.code == 2012
    admin.add_card(LINE, "Acme")
    linq.chats.share_contact_card(chat_id)
    with pytest.raises(RateLimitError) as limited:
        linq.chats.share_contact_card(chat_id)
    assert limited.value.code == 1007
    admin.add_card(LINE, "Acme", is_active=False)
    with pytest.raises(NotFoundError) as card_gone:  # the card check comes before the rate limit
        linq.chats.share_contact_card(chat_id)
    assert card_gone.value.code == 2012
    outcomes = [(e["outcome"], e["status"]) for e in admin.share_events()]
    assert outcomes == [
        ("not_found", 404),
        ("card_inactive", 404),
        ("accepted", 204),
        ("rate_limited", 429),
        ("card_inactive", 404),
    ]
    assert admin.shares() == {"total_accepted": 1, "per_chat": {chat_id: 1}}


def test_share_rate_limit_counts_down(
    clocked_linq: LinqAPIV3, clocked: SimulatorAdmin, clock: FakeClock
) -> None:
    clocked.add_card(LINE, "Acme")
    chat_id = seed_chat(clocked)
    other = seed_chat(clocked)
    clocked_linq.chats.share_contact_card(chat_id)
    clock.advance(99.5)  # 200.5 s left: rounded up
    with pytest.raises(RateLimitError) as limited:
        clocked_linq.chats.share_contact_card(chat_id)
    assert limited.value.retry_after == 201
    assert limited.value.response.headers["Retry-After"] == "201"
    assert error_json(limited.value)["error"]["retry_after"] == 201
    clocked_linq.chats.share_contact_card(other)  # the limit is per chat
    clock.advance(199.75)
    with pytest.raises(RateLimitError) as almost:
        clocked_linq.chats.share_contact_card(chat_id)
    assert almost.value.retry_after == 1
    clock.advance(0.75)
    clocked_linq.chats.share_contact_card(chat_id)
    assert clocked.shares()["per_chat"] == {chat_id: 2, other: 1}
    rate_limited = [e for e in clocked.share_events() if e["outcome"] == "rate_limited"]
    assert [e["retry_after"] for e in rate_limited] == [201, 1]


def test_short_share_window_over_the_wire(linq: LinqAPIV3, admin: SimulatorAdmin) -> None:
    admin.configure(share_window_s=0.3)
    admin.add_card(LINE, "Acme")
    chat_id = seed_chat(admin)
    linq.chats.share_contact_card(chat_id)
    with pytest.raises(RateLimitError) as limited:
        linq.chats.share_contact_card(chat_id)
    assert limited.value.response.headers["Retry-After"] == "1"
    time.sleep(0.35)
    linq.chats.share_contact_card(chat_id)
    assert admin.share_count(chat_id) == 2


def test_shares_without_effect_are_accepted_but_marked(linq: LinqAPIV3, admin: SimulatorAdmin) -> None:
    admin.add_card(LINE, "Acme")
    admin.add_line(LINE2, line_type="RCS")
    admin.add_card(LINE2, "Acme")
    chats = {
        "imessage": seed_chat(admin),
        "sms": seed_chat(admin, service="SMS"),
        "rcs": seed_chat(admin, service="RCS"),
        "no_outbound": seed_chat(admin, outbound=False),
        "rcs_line": seed_chat(admin, LINE2),
    }
    for chat_id in chats.values():
        linq.chats.share_contact_card(chat_id)
    effective = {e["chat_id"]: e["effective"] for e in admin.share_events()}
    assert {name: effective[chat_id] for name, chat_id in chats.items()} == {
        "imessage": True,
        "sms": False,
        "rcs": False,
        "no_outbound": False,
        "rcs_line": False,
    }
    assert admin.shares()["total_accepted"] == 5


def test_shares_events_only_on_request(linq: LinqAPIV3, admin: SimulatorAdmin) -> None:
    admin.add_card(LINE, "Acme")
    linq.chats.share_contact_card(seed_chat(admin))
    assert "events" not in admin.shares()
    assert len(admin.shares(events=True)["events"]) == 1


async def _raw_shares(port: int, chat_ids: list[str]) -> list[int]:
    """POST each share over one keep-alive connection, reading only status lines and bodies.

    A bare asyncio client keeps the test about the server: an httpx pool this wide spends more
    CPU than the server does.
    """
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    statuses = []
    try:
        for chat_id in chat_ids:
            writer.write(
                f"POST /api/partner/v3/chats/{chat_id}/share_contact_card HTTP/1.1\r\nHost: sim\r\n"
                f"Authorization: Bearer {KEY}\r\nContent-Length: 0\r\n\r\n".encode()
            )
            head = (await reader.readuntil(b"\r\n\r\n")).decode().lower().split("\r\n")
            statuses.append(int(head[0].split()[1]))
            length = [int(h.split(":")[1]) for h in head if h.startswith("content-length:")]
            await reader.readexactly(length[0] if length else 0)
    finally:
        writer.close()
        await writer.wait_closed()
    return statuses


def test_many_concurrent_shares_with_latency(server: SimulatorServer, admin: SimulatorAdmin) -> None:
    admin.add_card(LINE, "Acme")
    specs = [chat_spec() for _ in range(300)]
    admin.add_chats(specs)
    ids = [spec["id"] for spec in specs]
    admin.add_fault(path="/share_contact_card$", mode="pass", latency_ms=200)

    async def share_all() -> list[int]:
        # 100 connections x 3 shares each: 300 shares in ~0.6 s if the server keeps up.
        batches = await asyncio.gather(*(_raw_shares(server.port, ids[k::100]) for k in range(100)))
        return [status for batch in batches for status in batch]

    started = time.monotonic()
    statuses = asyncio.run(share_all())
    elapsed = time.monotonic() - started
    assert statuses == [204] * len(ids)
    assert elapsed < 2.0, f"300 shares with 200 ms latency over 100 connections took {elapsed:.2f} s"
    assert admin.shares()["total_accepted"] == 300


# ---- chats and messages ---------------------------------------------------------------------------
def test_list_chats_pages_with_offset_cursors(linq: LinqAPIV3, admin: SimulatorAdmin) -> None:
    specs = [chat_spec(LINE if i % 10 else LINE2) for i in range(50)]  # 45 on LINE, 5 on LINE2
    admin.add_chats(specs)
    first = linq.chats.list_chats(from_=LINE, limit=20)
    assert first.next_cursor == "20"
    pages = list(first.iter_pages())
    assert [p.next_cursor for p in pages] == ["20", "40", None]
    assert [len(p.chats) for p in pages] == [20, 20, 5]
    listed = [c.id for p in pages for c in p.chats]
    assert listed == [s["id"] for s in specs if s["line"] == LINE]  # creation order
    everything = [c.id for c in linq.chats.list_chats(limit=100).chats]
    assert everything == [s["id"] for s in specs]
    assert [c.id for c in linq.chats.list_chats(from_=LINE2)] == [
        s["id"] for s in specs if s["line"] == LINE2
    ]


def test_list_chats_default_limit_and_to_filter(linq: LinqAPIV3, admin: SimulatorAdmin) -> None:
    admin.add_chats([chat_spec() for _ in range(25)])
    target = seed_chat(admin, to="+15557654321")
    page = linq.chats.list_chats()
    assert (len(page.chats), page.next_cursor) == (20, "20")
    assert [c.id for c in linq.chats.list_chats(to="+15557654321").chats] == [target]
    assert linq.chats.list_chats(from_=LINE, to="+15550000000").chats == []


def test_list_chats_rejects_bad_parameters(linq: LinqAPIV3, http: httpx.Client) -> None:
    for limit in (0, 101):
        with pytest.raises(BadRequestError) as bad:
            linq.chats.list_chats(limit=limit)
        assert bad.value.code == 1005
    with pytest.raises(BadRequestError) as bad_from:
        linq.chats.list_chats(from_="2223334444")
    assert bad_from.value.code == 1002
    response = http.get("/v3/chats", params={"cursor": "abc"})
    assert (response.status_code, response.json()["error"]["code"]) == (400, 1005)


def test_chat_json_has_every_field_the_sdk_needs(linq: LinqAPIV3, admin: SimulatorAdmin) -> None:
    admin.add_line(LINE2, line_type="RCS")
    chat_id = seed_chat(admin, LINE2, service="RCS", to="+15551112222")
    chat = linq.chats.retrieve(chat_id)
    assert (chat.id, chat.service, chat.is_group, chat.is_archived) == (chat_id, "RCS", False, False)
    assert chat.health_status.status == "HEALTHY"
    me = [h for h in chat.handles if h.is_me]
    them = [h for h in chat.handles if not h.is_me]
    assert [(h.handle, h.line_type) for h in me] == [(LINE2, "RCS")]
    assert [h.handle for h in them] == ["+15551112222"]
    assert chat.updated_at >= chat.created_at
    with pytest.raises(NotFoundError) as unknown:
        linq.chats.retrieve(str(uuid.uuid4()))
    assert unknown.value.code == 2001


def test_messages_newest_first_with_cursor(linq: LinqAPIV3, admin: SimulatorAdmin) -> None:
    chat_id = str(uuid.uuid4())
    messages: list[MessageSpec] = [
        {"is_from_me": False, "sent_at": "2026-03-01T09:00:00Z", "text": "hi"},
        {"is_from_me": True, "sent_at": "2026-03-01T11:00:00Z", "text": "third"},
        {"is_from_me": True, "sent_at": "2026-03-01T10:00:00+00:00", "service": "SMS", "text": "second"},
    ]
    admin.add_chats([{"line": LINE, "id": chat_id, "messages": messages}])
    first = linq.chats.messages.list(chat_id, limit=2)
    assert first.next_cursor == "2"
    pages = list(first.iter_pages())
    found = [m for p in pages for m in p.messages]
    assert [m.is_from_me for m in found] == [True, True, False]
    assert [m.delivery_status for m in found] == ["sent", "sent", "received"]
    assert [m.service for m in found] == ["iMessage", "SMS", "iMessage"]
    assert all(m.chat_id == chat_id for m in found)
    assert found[0].sent_at is not None
    assert found[0].sent_at.isoformat() == "2026-03-01T11:00:00+00:00"
    with pytest.raises(NotFoundError) as unknown:
        linq.chats.messages.list(str(uuid.uuid4()))
    assert unknown.value.code == 2001


def test_bulk_chats_load_quickly(linq: LinqAPIV3, admin: SimulatorAdmin) -> None:
    specs: list[ChatSpec] = [{"line": LINE, "id": str(uuid.uuid4())} for _ in range(20_000)]
    started = time.monotonic()
    assert admin.add_chats(specs) == 20_000
    assert time.monotonic() - started < 10.0
    last = linq.chats.list_chats(from_=LINE, limit=100, cursor="19900")
    assert last.next_cursor is None
    assert [c.id for c in last.chats] == [s["id"] for s in specs[19_900:]]


def test_admin_rejects_a_bad_chat_batch_whole(admin: SimulatorAdmin) -> None:
    good = chat_spec()
    with pytest.raises(SimulatorAdminError):
        admin.add_chats([good, {"line": "not-a-number"}])
    with pytest.raises(SimulatorAdminError):
        admin.add_chats([good, good])
    assert admin.add_chats([good]) == 1


# ---- v2 contacts ----------------------------------------------------------------------------------
def test_v2_contacts_page_by_number(server: SimulatorServer, admin: SimulatorAdmin) -> None:
    assert admin.add_contacts(60) == 60
    seen: list[int] = []
    with httpx.Client(base_url=server.base_url, headers={"X-LINQ-INTEGRATION-TOKEN": KEY}) as v2:
        page = 1
        while True:
            body = v2.get("/v2/contacts", params={"page": page}).json()
            seen += [c["id"] for c in body["contacts"]]
            pagination = body["pagination"]
            if pagination["current_page"] >= pagination["total_pages"]:
                break
            page += 1
        assert pagination == {"current_page": 3, "per_page": 25, "total_pages": 3, "total_count": 60}
        big = v2.get("/v2/contacts", params={"per_page": 100}).json()
    assert len(seen) == len(set(seen)) == 60
    assert len(big["contacts"]) == 60
    contact = big["contacts"][0]
    assert {"id", "full_name", "email", "phone_number", "image_url", "created_at", "contact_owner"} <= set(
        contact
    )
    assert isinstance(contact["contact_owner"]["id"], int)


def test_v2_contacts_errors_use_the_v2_format(server: SimulatorServer, admin: SimulatorAdmin) -> None:
    with httpx.Client(base_url=server.base_url, timeout=5.0) as raw:
        too_big = raw.get("/v2/contacts", params={"per_page": 101}, headers={"X-LINQ-INTEGRATION-TOKEN": KEY})
        bearer = raw.get("/v2/contacts", headers={"Authorization": f"Bearer {KEY}"})
        wrong = raw.get("/v2/contacts", headers={"X-LINQ-INTEGRATION-TOKEN": "nope"})
    assert too_big.status_code == 400
    assert too_big.json()["error_code"] == "INVALID_PARAMETER"
    assert isinstance(too_big.json()["errors"], list)
    for response in (bearer, wrong):
        assert response.status_code == 401
        assert response.json()["status"] == "error"
        assert response.json()["error_code"] == "UNAUTHORIZED"


def test_v2_contacts_given_verbatim(server: SimulatorServer, admin: SimulatorAdmin) -> None:
    admin.add_contacts(contacts=[{"id": 7, "first_name": "Given"}])
    with httpx.Client(base_url=server.base_url, headers={"X-LINQ-INTEGRATION-TOKEN": KEY}) as v2:
        assert v2.get("/v2/contacts").json()["contacts"] == [{"id": 7, "first_name": "Given"}]


# ---- fault injection ------------------------------------------------------------------------------
def test_two_503s_then_success_for_one_chat(linq: LinqAPIV3, admin: SimulatorAdmin) -> None:
    admin.add_card(LINE, "Acme")
    flaky, steady = seed_chat(admin), seed_chat(admin)
    admin.add_fault(
        path="/share_contact_card$", chat_id=flaky, mode="respond", status=503, code=3006, times=2
    )
    linq.chats.share_contact_card(steady)
    for _ in range(2):
        with pytest.raises(InternalServerError) as failed:
            linq.chats.share_contact_card(flaky)
        assert (failed.value.status_code, failed.value.code) == (503, 3006)
    linq.chats.share_contact_card(flaky)
    assert admin.faults()[0]["remaining"] == 0
    assert admin.faults()[0]["applied"] == 2
    outcomes = [(e["chat_id"], e["outcome"]) for e in admin.share_events()]
    assert outcomes == [(steady, "accepted"), (flaky, "fault"), (flaky, "fault"), (flaky, "accepted")]
    assert admin.shares()["per_chat"] == {steady: 1, flaky: 1}


def test_fault_429_carries_retry_after_and_touches_nothing(linq: LinqAPIV3, admin: SimulatorAdmin) -> None:
    admin.add_card(LINE, "Acme")
    chat_id = seed_chat(admin)
    admin.add_fault(path="/share_contact_card$", status=429, retry_after=7, times=1)
    with pytest.raises(RateLimitError) as limited:
        linq.chats.share_contact_card(chat_id)
    assert (limited.value.code, limited.value.retry_after) == (1007, 7)
    assert limited.value.response.headers["Retry-After"] == "7"
    assert admin.share_count(chat_id) == 0
    linq.chats.share_contact_card(chat_id)  # no real share happened, so no rate limit now
    assert admin.share_count(chat_id) == 1


def test_fault_raw_bodies(linq: LinqAPIV3, admin: SimulatorAdmin) -> None:
    admin.add_card(LINE, "Acme")
    chat_id = seed_chat(admin)
    admin.add_faults(
        [
            {
                "path": "/share_contact_card$",
                "status": 502,
                "body_raw": "<html>bad gateway</html>",
                "times": 1,
            },
            {"path": "/share_contact_card$", "status": 200, "body_raw": "garbage", "times": 1},
        ]
    )
    with pytest.raises(InternalServerError) as gateway:
        linq.chats.share_contact_card(chat_id)
    assert gateway.value.code is None
    assert gateway.value.body == "<html>bad gateway</html>"
    linq.chats.share_contact_card(chat_id)  # a 200 with junk is still success to the SDK
    assert admin.share_count(chat_id) == 0
    assert [(e["outcome"], e["status"]) for e in admin.share_events()] == [("fault", 502), ("fault", 200)]


def test_fault_method_filter_and_first_match_wins(linq: LinqAPIV3, admin: SimulatorAdmin) -> None:
    admin.add_card(LINE, "Acme")
    chat_id = seed_chat(admin)
    admin.add_faults(
        [
            {"method": "GET", "path": "^/v3/chats", "status": 500, "times": 1},
            {"method": "get", "path": "^/v3/chats$", "status": 502, "code": None},
        ]
    )
    linq.chats.share_contact_card(chat_id)  # a POST: neither rule applies
    with pytest.raises(InternalServerError) as first:
        linq.chats.list_chats()
    assert (first.value.status_code, first.value.code) == (500, 3006)
    with pytest.raises(InternalServerError) as second:
        linq.chats.list_chats()
    assert (second.value.status_code, second.value.code) == (502, None)
    linq.chats.retrieve(chat_id)  # `^/v3/chats$` does not match a chat's own path
    admin.clear_faults()
    assert admin.faults() == []
    assert linq.chats.list_chats().chats[0].id == chat_id


def test_fault_latency_applies_before_normal_handling(linq: LinqAPIV3, admin: SimulatorAdmin) -> None:
    admin.add_line(LINE)
    admin.add_fault(path="/phone_numbers$", mode="pass", latency_ms=300)
    started = time.monotonic()
    assert [n.phone_number for n in linq.phone_numbers.list().phone_numbers] == [LINE]
    assert time.monotonic() - started >= 0.3


def test_accept_then_hang_records_the_share_but_never_answers(
    server: SimulatorServer, admin: SimulatorAdmin, make_linq: Callable[..., LinqAPIV3]
) -> None:
    admin.add_card(LINE, "Acme")
    chat_id = seed_chat(admin)
    admin.add_fault(path="/share_contact_card$", mode="accept_then_hang", hang_s=0.8, times=1)
    impatient = make_linq(server, timeout=0.3)
    with pytest.raises(APITimeoutError):
        impatient.chats.share_contact_card(chat_id)
    assert admin.share_count(chat_id) == 1
    assert last_event(admin)["responded"] is False  # still hanging
    time.sleep(0.7)  # past the hang: the handler has finished by now
    assert last_event(admin)["outcome"] == "accepted"
    assert last_event(admin)["responded"] is False  # the client had gone
    with pytest.raises(RateLimitError):  # the retry learns that the first attempt landed
        make_linq(server).chats.share_contact_card(chat_id)


def test_accept_then_hang_shorter_than_the_timeout_answers(linq: LinqAPIV3, admin: SimulatorAdmin) -> None:
    admin.add_card(LINE, "Acme")
    chat_id = seed_chat(admin)
    admin.add_fault(path="/share_contact_card$", mode="accept_then_hang", hang_s=0.3)
    started = time.monotonic()
    linq.chats.share_contact_card(chat_id)
    assert time.monotonic() - started >= 0.3
    assert last_event(admin)["responded"] is True


def test_fault_probability_is_seeded(linq: LinqAPIV3, admin: SimulatorAdmin) -> None:
    admin.add_line(LINE)

    def pattern() -> list[bool]:
        admin.add_fault(path="/phone_numbers$", status=500, probability=0.5)
        failed = []
        for _ in range(30):
            try:
                linq.phone_numbers.list()
                failed.append(False)
            except InternalServerError:
                failed.append(True)
        return failed

    first = pattern()
    assert 0 < sum(first) < 30
    assert admin.faults()[0]["applied"] == sum(first)
    admin.reset()
    admin.add_line(LINE)
    assert pattern() == first


def test_fault_on_v2_uses_the_v2_format(server: SimulatorServer, admin: SimulatorAdmin) -> None:
    admin.add_fault(path="^/v2/contacts$", status=500, message="Contacts could not be loaded")
    with httpx.Client(base_url=server.base_url, headers={"X-LINQ-INTEGRATION-TOKEN": KEY}) as v2:
        body = v2.get("/v2/contacts").json()
    assert body == {
        "status": "error",
        "error_code": "INTERNAL_ERROR",
        "message": "Contacts could not be loaded",
        "errors": ["Contacts could not be loaded"],
    }


def test_bad_fault_rules_are_refused(admin: SimulatorAdmin) -> None:
    with pytest.raises(SimulatorAdminError):
        admin.add_fault(path="(unclosed")
    with pytest.raises(SimulatorAdminError):
        admin.add_faults([{"path": "x"}, {"mode": "respond"}])  # type: ignore[typeddict-item]
    with pytest.raises(SimulatorAdminError):
        admin.add_fault(path="x", probability=2.0)
    assert admin.faults() == []


# ---- admin bookkeeping ----------------------------------------------------------------------------
def test_request_counts_by_route_template(linq: LinqAPIV3, admin: SimulatorAdmin, http: httpx.Client) -> None:
    admin.add_card(LINE, "Acme")
    chat_id = seed_chat(admin)
    linq.chats.share_contact_card(chat_id)
    with pytest.raises(RateLimitError):
        linq.chats.share_contact_card(chat_id)
    linq.chats.retrieve(chat_id)
    linq.contact_card.retrieve()
    http.post(f"/v3/chats/{chat_id}/share_contact_card", headers={"Authorization": "Bearer wrong"})
    assert admin.requests() == {
        SHARE_ROUTE: 3,
        "GET /v3/chats/{chat_id}": 1,
        "GET /v3/contact_card": 1,
    }


def test_reset_restores_defaults(admin: SimulatorAdmin, linq: LinqAPIV3) -> None:
    admin.configure(share_window_s=1, card_write_limit=9, card_write_window_s=2, at_risk_above_per_minute=5)
    admin.add_card(LINE, "Acme")
    admin.add_contacts(3)
    admin.add_fault(path=".")
    admin.reset()
    assert admin.configure() == {
        "share_window_s": 300.0,
        "card_write_limit": 3,
        "card_write_window_s": 600.0,
        "at_risk_above_per_minute": 0,
        "critical_above_per_minute": 0,
    }
    assert admin.faults() == []
    assert admin.cards() == []
    assert linq.phone_numbers.list().phone_numbers == []
    assert admin.requests() == {"GET /v3/phone_numbers": 1}


def test_admin_root_is_derived_from_the_base_url(server: SimulatorServer) -> None:
    assert admin_root("http://127.0.0.1:8123/api/partner") == "http://127.0.0.1:8123/_sim"
    assert server.admin.root == f"http://127.0.0.1:{server.port}/_sim"
    assert server.base_url == f"http://127.0.0.1:{server.port}/api/partner"


# ---- server lifecycle -----------------------------------------------------------------------------
def test_servers_get_their_own_ports_and_stop_cleanly() -> None:
    with SimulatorServer(KEY) as one, SimulatorServer(KEY) as two:
        assert one.port != two.port
        assert one.port > 0
        url = one.base_url
    with httpx.Client(timeout=1.0) as client, pytest.raises(httpx.ConnectError):
        client.get(f"{url}/v3/phone_numbers")


def test_stop_does_not_wait_for_a_hanging_request() -> None:
    srv = SimulatorServer(KEY)
    srv.start()
    srv.admin.add_card(LINE, "Acme")
    chat_id = seed_chat(srv.admin)
    srv.admin.add_fault(path="/share_contact_card$", mode="accept_then_hang", hang_s=120)
    outcome: list[object] = []

    def call() -> None:
        with httpx.Client(timeout=10.0) as client:
            try:
                headers = {"Authorization": f"Bearer {KEY}"}
                outcome.append(
                    client.post(f"{srv.base_url}/v3/chats/{chat_id}/share_contact_card", headers=headers)
                )
            except httpx.HTTPError as exc:
                outcome.append(exc)

    caller = threading.Thread(target=call)
    caller.start()
    deadline = time.monotonic() + 5
    while srv.state.share_counts.get(chat_id) != 1 and time.monotonic() < deadline:
        time.sleep(0.02)
    started = time.monotonic()
    srv.stop()
    caller.join(10)
    assert time.monotonic() - started < 5.0
    assert not caller.is_alive()
    assert len(outcome) == 1
    with pytest.raises(RuntimeError):
        srv.start()


# ---- the rules without HTTP -----------------------------------------------------------------------
def test_state_share_rules_with_an_injected_clock() -> None:
    clock = FakeClock()
    state = SimState(clock=clock)
    state.add_line(LINE)
    state.add_chats(
        [{"line": LINE, "id": "c1", "messages": [{"is_from_me": True, "sent_at": "2026-03-01T10:00:00Z"}]}]
    )
    first = state.share("c1", "t1")
    assert (first.outcome, first.effective) == ("card_inactive", False)
    error = share_error(first)
    assert error is not None
    assert (error.status, error.code) == (404, 2012)
    state.create_card(LINE, "Acme")
    assert share_error(state.share("c1", "t2")) is None
    clock.advance(299.9)
    limited = state.share("c1", "t3")
    assert (limited.outcome, limited.retry_after) == ("rate_limited", 1)
    clock.advance(0.1)
    assert state.share("c1", "t4").outcome == "accepted"
    missing = share_error(state.share("nope", "t5"))
    assert missing is not None
    assert missing.code == 2001
    assert state.shares_json()["per_chat"] == {"c1": 2}
