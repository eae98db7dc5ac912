"""Card operations and v2 contacts against the real simulator and a real PostgreSQL."""

from __future__ import annotations

import datetime as dt
import threading
from collections.abc import Iterator

import httpx
import pytest
from sqlalchemy import text

from tests.support.world import World
from worker.cards.contacts import ContactsClient, ContactsError
from worker.cards.desk import (
    WRITE_LIMIT,
    WRITE_WINDOW_S,
    CardChanges,
    CardCommandError,
    CardDesk,
    WriteLimitReached,
)
from worker.config import Secret, Settings
from worker.deps import Deps
from worker.simulator import SimulatorAdmin
from worker.store.cards import (
    CachedLine,
    CardState,
    WriteSlot,
    cached_lines,
    finish_card_write,
    reserve_card_write,
    store_cards,
)
from worker.store.chats import ensure_lines
from worker.store.session import transaction

PHONE = "+14155550123"


@pytest.fixture
def desk(deps: Deps) -> CardDesk:
    return CardDesk(deps.client(), deps.sessions)


def writes(deps: Deps, phone: str = PHONE) -> list[tuple[str, int | None, int | None, bool, str | None]]:
    with deps.sessions() as s:
        rows = s.execute(
            text(
                "SELECT method, http_status, linq_code, counted, trace_id FROM card_writes "
                "WHERE phone_number = :p ORDER BY id"
            ),
            {"p": phone},
        ).all()
    return [tuple(r) for r in rows]


def cached(deps: Deps, phone: str = PHONE) -> CachedLine | None:
    with transaction(deps.sessions) as s:
        return cached_lines(s, [phone]).get(phone)


def sim_card(sim: SimulatorAdmin, phone: str = PHONE) -> dict[str, object]:
    return next(c for c in sim.cards() if c["phone_number"] == phone)


# --------------------------------------------------------------------------- writes


def test_create_then_update_sends_only_given_fields_and_refreshes_the_cache(
    desk: CardDesk, deps: Deps, sim: SimulatorAdmin
) -> None:
    sim.add_line(PHONE)
    made = desk.create(PHONE, "Acme", "Support", "https://cdn.example.com/a.jpg")
    assert made.card.is_active
    assert made.writes_used == 1
    assert made.trace_id is not None
    assert len(made.trace_id) == 32
    line = cached(deps)
    assert line is not None
    assert (line.first_name, line.last_name, line.image_url, line.card_active) == (
        "Acme",
        "Support",
        "https://cdn.example.com/a.jpg",
        True,
    )

    changed = desk.update(PHONE, CardChanges(image_url="https://cdn.example.com/b.jpg"))
    assert changed.writes_used == 2
    assert sim_card(sim) == {
        "phone_number": PHONE,
        "first_name": "Acme",
        "last_name": "Support",
        "image_url": "https://cdn.example.com/b.jpg",
        "is_active": True,
    }
    line = cached(deps)
    assert line is not None
    assert line.image_url == "https://cdn.example.com/b.jpg"
    assert writes(deps) == [
        ("POST", 200, None, True, made.trace_id),
        ("PATCH", 200, None, True, changed.trace_id),
    ]


def test_an_inactive_result_is_cached_inactive_then_list_sees_linq_activate_it(
    desk: CardDesk, deps: Deps, sim: SimulatorAdmin
) -> None:
    sim.add_line(PHONE, card_activation="on_next_read")
    made = desk.create(PHONE, "Acme")
    assert not made.card.is_active
    line = cached(deps)
    assert line is not None
    assert not line.card_active
    # The simulator applies an on_next_read card on the next GET: Linq active, cache still not.
    (view,) = desk.views(PHONE, now=deps.clock(), policy=deps.policy)
    assert view.card is not None
    assert view.card.is_active
    assert not view.will_share
    assert "cache stale (says inactive)" in view.reason


def test_2014_is_explained_counted_and_not_retried(desk: CardDesk, deps: Deps, world: World) -> None:
    world.line(PHONE)
    with pytest.raises(
        CardCommandError, match="a card already exists for this number; use card update"
    ) as info:
        desk.create(PHONE, "Acme")
    assert info.value.error is not None
    assert (info.value.error.status, info.value.error.code) == (409, 2014)
    assert world.sim.requests().get("POST /v3/contact_card") == 1
    assert writes(deps) == [("POST", 409, 2014, True, info.value.error.trace_id)]


def test_2012_on_update_marks_the_cached_line_inactive(
    desk: CardDesk, deps: Deps, sim: SimulatorAdmin
) -> None:
    sim.add_line(PHONE)
    with transaction(deps.sessions) as s:
        store_cards(s, [CardState(PHONE, "Old", None, None, True)], complete=False)
    with pytest.raises(CardCommandError, match="there is no active card to update"):
        desk.update(PHONE, CardChanges(first_name="New"))
    line = cached(deps)
    assert line is not None
    assert not line.card_active
    assert [w[:4] for w in writes(deps)] == [("PATCH", 404, 2012, True)]


def test_own_record_refuses_the_fourth_write_without_calling(
    desk: CardDesk, deps: Deps, sim: SimulatorAdmin
) -> None:
    sim.add_line(PHONE)
    desk.create(PHONE, "Acme")
    desk.update(PHONE, CardChanges(first_name="Acme 2"))
    desk.update(PHONE, CardChanges(first_name="Acme 3"))
    before = sim.requests()
    with pytest.raises(WriteLimitReached) as info:
        desk.update(PHONE, CardChanges(first_name="Acme 4"))
    assert 590 < info.value.wait_s <= WRITE_WINDOW_S
    assert "The next write is allowed in" in str(info.value)
    assert sim.requests() == before
    assert len(writes(deps)) == WRITE_LIMIT


def test_429_from_linq_is_recorded_but_not_counted(desk: CardDesk, deps: Deps, sim: SimulatorAdmin) -> None:
    sim.add_line(PHONE)
    sim.configure(card_write_limit=1)
    desk.create(PHONE, "Acme")
    with pytest.raises(CardCommandError, match=r"Retry-After") as info:
        desk.update(PHONE, CardChanges(first_name="Again"))
    assert info.value.error is not None
    assert info.value.error.retry_after_s is not None
    assert info.value.error.retry_after_s > 500
    assert [w[:4] for w in writes(deps)] == [("POST", 200, None, True), ("PATCH", 429, 1007, False)]


@pytest.mark.parametrize(("status", "code"), [(503, 4004), (500, 2022)])
def test_upstream_failures_are_one_call_and_leave_the_cache_safe(
    desk: CardDesk, deps: Deps, world: World, status: int, code: int
) -> None:
    world.line(PHONE)
    world.sim.add_fault(path="^/v3/contact_card$", method="PATCH", status=status, code=code)
    with pytest.raises(CardCommandError) as info:
        desk.update(PHONE, CardChanges(last_name="Team"))
    assert info.value.error is not None
    assert (info.value.error.status, info.value.error.code) == (status, code)
    assert "(2 of 3 writes left in this 10-minute window)" in str(info.value)
    assert world.sim.requests().get("PATCH /v3/contact_card") == 1
    line = cached(deps)
    assert line is not None
    # 4004 leaves the card not active at Linq; 2022 says nothing about the current card.
    assert line.card_active is (code != 4004)


# --------------------------------------------------------------------------- the write record


def age_writes(deps: Deps, seconds: float) -> None:
    with transaction(deps.sessions) as s:
        s.execute(text("UPDATE card_writes SET at = at - make_interval(secs => :s)"), {"s": seconds})


def reserve(deps: Deps, phone: str = PHONE) -> WriteSlot:
    with transaction(deps.sessions) as s:
        return reserve_card_write(s, phone, "PATCH", limit=WRITE_LIMIT, window_s=WRITE_WINDOW_S)


def test_the_window_slides_and_uncounted_writes_are_free(deps: Deps) -> None:
    first = reserve(deps)
    assert first.write_id is not None
    age_writes(deps, 400)
    assert reserve(deps).write_id is not None
    assert reserve(deps).write_id is not None
    refused = reserve(deps)
    assert refused.write_id is None
    # The oldest frees its slot 600 s after it was made, i.e. ~200 s from now.
    assert 190 < refused.wait_s <= 200
    with transaction(deps.sessions) as s:
        finish_card_write(s, first.write_id, status=401, code=2004, trace_id=None, counted=False)
    assert reserve(deps).write_id is not None
    age_writes(deps, WRITE_WINDOW_S)
    assert reserve(deps, "+13334445555").used == 1  # per number
    assert reserve(deps).used == 1


def test_racing_writers_take_exactly_the_budget(deps: Deps) -> None:
    barrier = threading.Barrier(6)
    got: list[WriteSlot] = []
    lock = threading.Lock()

    def writer() -> None:
        barrier.wait()
        slot = reserve(deps)
        with lock:
            got.append(slot)

    threads = [threading.Thread(target=writer) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert sum(1 for s in got if s.write_id is not None) == WRITE_LIMIT
    assert len(got) == 6


# --------------------------------------------------------------------------- list


def test_views_join_linq_cards_with_the_cache_and_count_due_chats(
    desk: CardDesk, deps: Deps, world: World
) -> None:
    active = world.line("+12223334444")
    world.chat(active)
    world.chat(active)
    world.chat(active, service="SMS")
    world.line("+13334445555", active=False)
    world.line("+15551112222", active=True, in_db=False)
    with transaction(deps.sessions) as s:
        ensure_lines(s, ["+19998887777"])  # a line cardshare knows, with no card at Linq
    views = {v.phone_number: v for v in desk.views(None, now=deps.clock(), policy=deps.policy)}
    assert sorted(views) == ["+12223334444", "+13334445555", "+15551112222", "+19998887777"]
    assert (views[active].will_share, views[active].due_today) == (True, 2)
    assert not views["+13334445555"].will_share
    assert "not in cardshare's cache yet" in views["+15551112222"].reason
    assert views["+19998887777"].card is None
    (one,) = desk.views("+19998887777", now=deps.clock(), policy=deps.policy)  # GET answers 2012
    assert one.card is None
    assert not one.will_share


# --------------------------------------------------------------------------- v2 contacts


@pytest.fixture
def contacts_client(settings: Settings) -> Iterator[ContactsClient]:
    client = ContactsClient.create(settings)
    yield client
    client.close()


def test_contacts_pages_over_real_http(contacts_client: ContactsClient, sim: SimulatorAdmin) -> None:
    sim.add_contacts(7)
    first = contacts_client.page(1, 3)
    assert (first.current_page, first.total_pages, first.total_count) == (1, 3, 7)
    assert [c["id"] for c in first.contacts] == [1, 2, 3]
    every = list(contacts_client.pages(3))
    assert [c["id"] for p in every for c in p.contacts] == list(range(1, 8))
    assert sim.requests()["GET /v2/contacts"] == 4


def test_contacts_empty_account_is_one_page(contacts_client: ContactsClient, sim: SimulatorAdmin) -> None:
    assert [p.contacts for p in contacts_client.pages()] == [[]]


def test_contacts_v2_errors_in_both_formats(contacts_client: ContactsClient, sim: SimulatorAdmin) -> None:
    sim.add_fault(path="^/v2/contacts$", status=500, message="Contacts could not be loaded", times=1)
    with pytest.raises(ContactsError) as info:
        contacts_client.page()
    assert (info.value.status, info.value.code) == (500, "INTERNAL_ERROR")
    assert info.value.trace_id is not None
    assert len(info.value.trace_id) == 32
    sim.add_fault(
        path="^/v2/contacts$",
        status=404,
        body_raw='{"errors": [{"status": 404, "code": "not_found", "title": "Not Found", "detail": "Gone"}]}',
        content_type="application/json",
        times=1,
    )
    with pytest.raises(ContactsError, match="HTTP 404, code not_found, Gone"):
        contacts_client.page()


def test_contacts_wrong_token_is_401_naming_the_setting(settings: Settings, sim: SimulatorAdmin) -> None:
    client = ContactsClient.create(settings.replace(linq_api_key=Secret("wrong-token-value")))
    try:
        with pytest.raises(ContactsError) as info:
            client.page()
    finally:
        client.close()
    assert info.value.status == 401
    assert "check LINQ_API_V3_API_KEY" in str(info.value)
    assert "wrong-token-value" not in str(info.value)


def test_contacts_unreachable_host(settings: Settings) -> None:
    client = ContactsClient.create(settings.replace(linq_base_url="http://127.0.0.1:9/api/partner"))
    try:
        with pytest.raises(ContactsError, match="could not be reached"):
            client.page()
    finally:
        client.close()
    assert isinstance(client.http, httpx.Client)


def test_cache_timestamps_are_aware(deps: Deps, world: World) -> None:
    world.line(PHONE)
    line = cached(deps)
    assert line is not None
    assert line.card_checked_at is not None
    assert line.card_checked_at.tzinfo is not None
    assert line.card_checked_at <= dt.datetime.now(dt.UTC)
