"""`cardshare card ...` and `cardshare contacts` as subprocesses, against the simulator and PostgreSQL."""

from __future__ import annotations

import json
import re
import subprocess

import httpx
import pytest
from sqlalchemy import text

from tests.support.cli import cardshare
from tests.support.servers import API_KEY
from tests.support.world import World
from worker.config import Settings
from worker.deps import Deps
from worker.simulator import SimulatorAdmin

pytestmark = pytest.mark.acceptance

PHONE = "+14155550123"
TRACE = re.compile(r"trace [0-9a-f]{32}")
WRITE_ROUTES = ("POST /v3/contact_card", "PATCH /v3/contact_card")


def one_error_line(done: subprocess.CompletedProcess[str], code: int = 1) -> str:
    assert done.returncode == code, done.stdout + done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith("cardshare: ")
    return lines[0]


def card_writes(deps: Deps) -> list[tuple[object, ...]]:
    with deps.sessions() as s:
        return [
            tuple(r)
            for r in s.execute(
                text("SELECT method, http_status, linq_code, counted, trace_id FROM card_writes ORDER BY id")
            )
        ]


def cached(deps: Deps, phone: str = PHONE) -> tuple[object, ...] | None:
    with deps.sessions() as s:
        row = s.execute(
            text("SELECT first_name, last_name, image_url, card_active FROM lines WHERE phone_number = :p"),
            {"p": phone},
        ).one_or_none()
    return tuple(row) if row is not None else None


def writes_seen(sim: SimulatorAdmin) -> int:
    seen = sim.requests()
    return sum(seen.get(route, 0) for route in WRITE_ROUTES)


# --------------------------------------------------------------------------- list


def test_list_table_and_json(world: World, deps: Deps, settings: Settings) -> None:
    shared = world.line("+12223334444")
    world.chat(shared)
    world.line("+13334445555", active=False)
    world.line("+15551112222", active=True, in_db=False)  # Linq active, cache has never seen it

    table = cardshare(settings, "card", "list")
    assert table.returncode == 0, table.stderr
    rows = {line.split()[0]: line for line in table.stdout.splitlines()[2:]}
    assert table.stdout.splitlines()[0].split()[:4] == ["NUMBER", "NAME", "IMAGE", "ACTIVE"]
    assert re.search(
        r"Acme Support\s+-\s+yes\s+yes\s+1\s+active at Linq and in cardshare's cache", rows[shared]
    )
    assert re.search(r"\bno\s+no\s+0\s+card inactive at Linq", rows["+13334445555"])
    assert "not in cardshare's cache yet" in rows["+15551112222"]

    as_json = cardshare(settings, "card", "list", "--json")
    assert as_json.returncode == 0, as_json.stderr
    data = {v["phone_number"]: v for v in json.loads(as_json.stdout)}
    assert data[shared]["will_share"] is True
    assert data[shared]["due_today"] == 1
    assert data[shared]["card"]["is_active"] is True
    assert data[shared]["cache"]["card_active"] is True
    assert data["+15551112222"]["cache"] is None
    assert data["+15551112222"]["will_share"] is False

    one = cardshare(settings, "card", "list", "--phone", "+1 (333) 444-5555", "--json")
    assert one.returncode == 0, one.stderr
    assert [v["phone_number"] for v in json.loads(one.stdout)] == ["+13334445555"]


# --------------------------------------------------------------------------- create


def test_create_active_prints_the_card_and_refreshes_the_cache(
    sim: SimulatorAdmin, deps: Deps, settings: Settings
) -> None:
    sim.add_line(PHONE)
    done = cardshare(
        settings,
        "card",
        "create",
        "--phone",
        PHONE,
        "--first",
        "Acme",
        "--last",
        "Support",
        "--image",
        "https://cdn.example.com/acme.jpg",
    )
    assert done.returncode == 0, done.stderr
    first, second = done.stdout.strip().splitlines()
    assert first.startswith(
        f"card created for {PHONE}: Acme Support, image https://cdn.example.com/acme.jpg, active: yes (trace "
    )
    assert "cardshare will share this card from the next sweep" in second
    assert "1 of 3 card writes used" in second
    assert cached(deps) == ("Acme", "Support", "https://cdn.example.com/acme.jpg", True)
    ((method, status, code, counted, trace),) = card_writes(deps)
    assert (method, status, code, counted) == ("POST", 200, None, True)
    assert f"(trace {trace})" in first


def test_create_inactive_result_says_so_and_what_next(
    sim: SimulatorAdmin, deps: Deps, settings: Settings
) -> None:
    sim.add_line(PHONE, card_activation="on_next_read")
    done = cardshare(settings, "card", "create", "--phone", PHONE, "--first", "Acme")
    assert done.returncode == 0, done.stderr
    assert "active: no" in done.stdout
    assert "NOT active yet" in done.stdout
    assert f"cardshare card list --phone {PHONE}" in done.stdout
    assert cached(deps) == ("Acme", None, None, False)
    # Reading activates an on_next_read card: Linq now says active, the cache does not yet.
    listed = cardshare(settings, "card", "list", "--phone", PHONE, "--json")
    (view,) = json.loads(listed.stdout)
    assert view["card"]["is_active"] is True
    assert view["will_share"] is False
    assert "cache stale (says inactive)" in view["reason"]


def test_create_when_a_card_is_active_is_2014(world: World, deps: Deps, settings: Settings) -> None:
    world.line(PHONE)
    line = one_error_line(cardshare(settings, "card", "create", "--phone", PHONE, "--first", "Other"))
    assert "a card already exists for this number; use card update" in line
    assert "HTTP 409, code 2014" in line
    assert TRACE.search(line)
    assert world.sim.requests()["POST /v3/contact_card"] == 1
    ((_, status, code, counted, trace),) = card_writes(deps)
    assert (status, code, counted) == (409, 2014, True)
    assert f"trace {trace}" in line


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["card", "create", "--phone", "4155550123", "--first", "Acme"], "is not E.164"),
        (
            ["card", "create", "--phone", PHONE, "--first", "Acme", "--image", "http://x.example/a.jpg"],
            "https",
        ),
        (["card", "create", "--phone", PHONE, "--first", "  "], "--first must not be empty"),
        (["card", "update", "--phone", PHONE], "nothing to update"),
        (["card", "update", "--phone", "+1415", "--first", "A"], "is not E.164"),
        (["card", "list", "--phone", "not a number"], "is not E.164"),
        (["contacts", "--per-page", "101"], "--per-page must be within 1..100"),
        (["contacts", "--page", "2", "--all"], "exclude each other"),
    ],
)
def test_bad_input_exits_2_before_any_call(
    sim: SimulatorAdmin, deps: Deps, settings: Settings, args: list[str], needle: str
) -> None:
    line = one_error_line(cardshare(settings, *args), code=2)
    assert needle in line
    assert sim.requests() == {}
    assert card_writes(deps) == []


# --------------------------------------------------------------------------- update


def test_update_sends_only_the_given_fields(world: World, deps: Deps, settings: Settings) -> None:
    world.sim.add_card(PHONE, "Acme", last_name="Support", image_url="https://cdn.example.com/old.jpg")
    done = cardshare(
        settings, "card", "update", "--phone", PHONE, "--image", "https://cdn.example.com/new.jpg"
    )
    assert done.returncode == 0, done.stderr
    assert "sent image_url only" in done.stdout
    (card,) = [c for c in world.sim.cards() if c["phone_number"] == PHONE]
    assert card == {
        "phone_number": PHONE,
        "first_name": "Acme",
        "last_name": "Support",
        "image_url": "https://cdn.example.com/new.jpg",
        "is_active": True,
    }
    assert cached(deps) == ("Acme", "Support", "https://cdn.example.com/new.jpg", True)


def test_update_without_a_card_is_2012(sim: SimulatorAdmin, deps: Deps, settings: Settings) -> None:
    sim.add_line(PHONE)
    line = one_error_line(cardshare(settings, "card", "update", "--phone", PHONE, "--first", "New"))
    assert "there is no active card to update" in line
    assert "HTTP 404, code 2012" in line
    assert TRACE.search(line)
    assert sim.requests()["PATCH /v3/contact_card"] == 1


# --------------------------------------------------------------------------- write budget


def test_own_record_refuses_a_fourth_write_within_ten_minutes(
    sim: SimulatorAdmin, deps: Deps, settings: Settings
) -> None:
    sim.add_line(PHONE)
    assert cardshare(settings, "card", "create", "--phone", PHONE, "--first", "A").returncode == 0
    assert cardshare(settings, "card", "update", "--phone", PHONE, "--first", "B").returncode == 0
    assert cardshare(settings, "card", "update", "--phone", PHONE, "--last", "C").returncode == 0
    line = one_error_line(cardshare(settings, "card", "update", "--phone", PHONE, "--first", "D"))
    assert re.search(
        r"3 card writes to \+14155550123 in the last 10 minutes .* allowed in (9m[0-9]{2}s|10m00s)", line
    )
    assert writes_seen(sim) == 3
    assert len(card_writes(deps)) == 3


def test_429_from_linq_prints_retry_after_when_writes_came_from_elsewhere(
    sim: SimulatorAdmin, deps: Deps, settings: Settings
) -> None:
    sim.add_card(PHONE, "Acme")
    # Three writes made outside cardshare (the dashboard, another tool): its own table is empty.
    with httpx.Client(
        base_url=settings.linq_base_url, headers={"Authorization": f"Bearer {API_KEY}"}
    ) as http:
        for name in ("X", "Y", "Z"):
            answer = http.patch("/v3/contact_card", params={"phone_number": PHONE}, json={"first_name": name})
            assert answer.status_code == 200
    line = one_error_line(cardshare(settings, "card", "update", "--phone", PHONE, "--first", "Mine"))
    assert re.search(r"retry after (9m[0-9]{2}s|10m00s) \(Retry-After\)", line)
    assert "HTTP 429, code 1007" in line
    assert TRACE.search(line)
    assert [w[:4] for w in card_writes(deps)] == [("PATCH", 429, 1007, False)]


@pytest.mark.parametrize(
    ("status", "code", "needle"),
    [
        (503, 4004, "quick repeats extend that limit"),
        (500, 2022, "Linq did not finish setting up the card; not retried automatically"),
    ],
)
def test_upstream_card_failures_are_explained_and_not_retried(
    sim: SimulatorAdmin, deps: Deps, settings: Settings, status: int, code: int, needle: str
) -> None:
    sim.add_line(PHONE)
    sim.add_fault(
        path="^/v3/contact_card$", method="POST", status=status, code=code, message="upstream said no"
    )
    line = one_error_line(cardshare(settings, "card", "create", "--phone", PHONE, "--first", "Acme"))
    assert needle in line
    assert f"HTTP {status}, code {code}, upstream said no" in line
    assert TRACE.search(line)
    assert sim.requests()["POST /v3/contact_card"] == 1
    assert [w[:4] for w in card_writes(deps)] == [("POST", status, code, True)]


# --------------------------------------------------------------------------- contacts


def test_contacts_one_page_all_pages_and_json(sim: SimulatorAdmin, settings: Settings) -> None:
    sim.add_contacts(7)
    one = cardshare(settings, "contacts", "--page", "2", "--per-page", "3")
    assert one.returncode == 0, one.stderr
    lines = one.stdout.strip().splitlines()
    assert lines[0].split() == ["ID", "NAME", "PHONE", "EMAIL", "COMPANY"]
    assert [line.split()[0] for line in lines[2:-1]] == ["4", "5", "6"]
    assert lines[-1] == "page 2 of 3: 3 shown, 7 contacts in all"

    every = cardshare(settings, "contacts", "--all", "--per-page", "3")
    assert every.returncode == 0, every.stderr
    assert [line.split()[0] for line in every.stdout.strip().splitlines()[2:-1]] == [
        str(i) for i in range(1, 8)
    ]
    assert every.stdout.strip().splitlines()[-1] == "7 contacts (3 pages; Linq reports 7)"
    assert sim.requests()["GET /v2/contacts"] == 4

    as_json = json.loads(cardshare(settings, "contacts", "--all", "--json").stdout)
    assert [c["id"] for c in as_json["contacts"]] == list(range(1, 8))
    assert (as_json["total_count"], as_json["pages"]) == (7, 1)
    page_json = json.loads(cardshare(settings, "contacts", "--json", "--per-page", "5").stdout)
    assert page_json["pagination"] == {"current_page": 1, "per_page": 5, "total_pages": 2, "total_count": 7}


def test_contacts_v2_error_is_one_line(sim: SimulatorAdmin, settings: Settings) -> None:
    sim.add_fault(path="^/v2/contacts$", status=500, message="Contacts could not be loaded")
    line = one_error_line(cardshare(settings, "contacts"))
    assert "HTTP 500, code INTERNAL_ERROR, Contacts could not be loaded" in line
    assert TRACE.search(line)
    assert sim.requests()["GET /v2/contacts"] == 1


# --------------------------------------------------------------------------- auth


@pytest.mark.parametrize(
    ("args", "level"),
    [
        (["card", "list"], "DEBUG"),
        (["card", "create", "--phone", PHONE, "--first", "Acme"], "INFO"),
        (["card", "update", "--phone", PHONE, "--first", "Acme"], "DEBUG"),
        (["contacts"], "INFO"),
    ],
)
def test_401_names_the_setting_and_never_prints_the_key(
    sim: SimulatorAdmin, deps: Deps, settings: Settings, args: list[str], level: str
) -> None:
    sim.add_line(PHONE)
    wrong = "sk-wrong-0123456789abcdef"
    # DEBUG logs every request the SDK makes: the key must not be in them either.
    done = cardshare(settings, *args, LINQ_API_V3_API_KEY=wrong, CARDSHARE_LOG_LEVEL=level)
    if level == "DEBUG":
        assert done.returncode == 1, done.stdout + done.stderr
        line = done.stderr.strip().splitlines()[-1]
        assert line.startswith("cardshare: ")
    else:
        line = one_error_line(done)
    assert "check LINQ_API_V3_API_KEY" in line
    assert "HTTP 401" in line
    assert wrong not in done.stdout
    assert wrong not in done.stderr
    assert API_KEY not in done.stdout + done.stderr
    # A refused key spends none of Linq's write budget.
    assert all(w[3] is False for w in card_writes(deps))
