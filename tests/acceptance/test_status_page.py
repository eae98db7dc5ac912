"""The status page, served by the real `cardshare web`, loaded by headless Chromium: the numbers in
the DOM Chromium built are the numbers in PostgreSQL."""

from __future__ import annotations

import datetime as dt
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import text

from tests.support.procs import Proc, Procs, wait_until
from tests.support.sweeps import Collector, sweep
from tests.support.world import World
from worker.config import Settings
from worker.deps import Deps
from worker.ops import controls
from worker.sharing.share import Outcome, share_chat
from worker.store.session import transaction
from worker.store.warnings import raise_warning

pytestmark = pytest.mark.acceptance

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
SHARE_PATH = "/share_contact_card$"


class Numbers(HTMLParser):
    """Every element with a data-field: {(line, field): text}; and the chat ids of failure rows."""

    def __init__(self) -> None:
        super().__init__()
        self.values: dict[tuple[str | None, str], str] = {}
        self.failure_chats: list[str] = []
        self._open: tuple[str | None, str] | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = dict(attrs)
        if a.get("data-chat"):
            self.failure_chats.append(str(a["data-chat"]))
        if a.get("data-field"):
            self._open = (a.get("data-line"), str(a["data-field"]))
            self.values[self._open] = ""

    def handle_data(self, data: str) -> None:
        if self._open is not None:
            self.values[self._open] += data

    def handle_endtag(self, tag: str) -> None:
        self._open = None


def dump_dom(url: str, profile: Path) -> str:
    assert CHROMIUM is not None
    done = subprocess.run(
        [
            CHROMIUM,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--no-first-run",
            f"--user-data-dir={profile}",
            "--dump-dom",
            url,
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout


@pytest.fixture
def page_url(settings: Settings, tmp_path: Path) -> Iterator[str]:
    procs = Procs(settings, tmp_path)
    web = Proc(
        [sys.executable, "-c", "from worker.cli.main import main; main()", "web", "--port", "0"],
        procs.env(),
        tmp_path / "web.log",
    ).start()
    procs.started.append(web)
    try:
        wait_until(lambda: "status page at" in web.log_path.read_text(), 60, what="cardshare web")
        match = re.search(r"status page at (http://\S+)", web.log_path.read_text())
        assert match
        assert httpx.get(match.group(1) + "healthz", timeout=5).status_code == 200
        yield match.group(1)
    finally:
        procs.stop_all()


def db_counts(deps: Deps, day: dt.date) -> dict[str, int]:
    with deps.sessions() as s:
        rows = s.execute(
            text("SELECT status, count(*) FROM share_days WHERE day = :d GROUP BY 1"), {"d": day}
        ).all()
    return {str(k): int(v) for k, v in rows}


@pytest.mark.skipif(
    CHROMIUM is None, reason="chromium is not installed (apt-get install chromium chromium-driver)"
)
def test_chromium_reads_the_numbers_the_database_holds(
    world: World, deps: Deps, today: dt.date, tmp_path: Path, page_url: str
) -> None:
    line = world.line()
    other = world.line("+13334445555")
    shared = [world.chat(line) for _ in range(4)] + [world.chat(other)]
    failed, deferred = world.chat(line), world.chat(other)
    world.sim.add_faults(
        [
            {"path": SHARE_PATH, "chat_id": str(failed), "status": 400, "code": 1002},
            {"path": SHARE_PATH, "chat_id": str(deferred), "status": 503, "code": 4004},
        ]
    )
    for chat in shared:
        assert share_chat(chat, today, deps).outcome is Outcome.SHARED
    assert share_chat(failed, today, deps).outcome is Outcome.FAILED
    assert share_chat(deferred, today, deps).outcome is Outcome.SKIPPED
    queued = [world.chat(line), world.chat(line)]
    sweep(deps, Collector())

    # Served on loopback only, by default.
    assert page_url.startswith("http://127.0.0.1:")
    dom = dump_dom(page_url, tmp_path / "chromium-profile")
    numbers = Numbers()
    numbers.feed(dom)
    got = numbers.values

    counts = db_counts(deps, today)
    assert counts == {"succeeded": 5, "failed": 1, "skipped": 1, "queued": 2}
    assert got[(None, "day")] == today.isoformat()
    assert int(got[("total", "shared")]) == counts["succeeded"]
    assert int(got[("total", "failed")]) == counts["failed"]
    assert int(got[("total", "skipped")]) == counts["skipped"]
    assert int(got[("total", "in_flight")]) == counts["queued"]
    assert int(got[("total", "due")]) == sum(counts.values())
    assert int(got[("total", "unknown")]) == 0
    with deps.sessions() as s:
        per_line: dict[Any, Any] = dict(
            s.execute(
                text(
                    "SELECT c.line_phone, count(*) FROM share_days d JOIN chats c ON c.id = d.chat_id "
                    "WHERE d.day = :d AND d.status = 'succeeded' GROUP BY 1"
                ),
                {"d": today},
            ).all()
        )
    assert int(got[(line, "shared")]) == per_line[line] == 4
    assert int(got[(other, "shared")]) == per_line[other] == 1
    assert int(got[(None, "queue_ready")]) == 0
    assert got[(None, "last_sweep_at")].startswith(today.isoformat()[:4])
    assert numbers.failure_chats == [str(failed)]
    assert str(queued[0]) not in numbers.failure_chats


def test_status_json_and_a_bad_day(world: World, deps: Deps, today: dt.date, page_url: str) -> None:
    world.line()
    chat = world.chat()
    assert share_chat(chat, today, deps).outcome is Outcome.SHARED
    doc = httpx.get(page_url + "status.json", timeout=10).json()
    assert doc["total"]["shared"] == 1
    assert doc["day"] == today.isoformat()
    bad = httpx.get(page_url + "status.json?day=soon", timeout=10)
    assert bad.status_code == 400
    assert bad.json() == {"error": "day 'soon' is not YYYY-MM-DD"}
    # Read-only: nothing but GET.
    assert httpx.post(page_url, timeout=10).status_code == 405
    old = httpx.get(page_url + "status.json?day=2020-01-01", timeout=10).json()
    assert old["total"]["due"] == 0
    # A day past retention: its numbers are empty because its rows are dropped, and it says so.
    assert old["past_retention"].startswith("2020-01-01 is past retention: CARDSHARE_RETENTION_DAYS=")
    assert "past_retention" not in doc
    page = httpx.get(page_url, timeout=10).text
    assert "No failed or unknown chat-days." in page


def test_the_page_shows_holds_pace_the_account_pause_and_warnings(
    world: World, deps: Deps, today: dt.date, page_url: str
) -> None:
    paused = world.line()
    risky = world.line("+13334445555", reputation="AT_RISK")
    for line in (paused, risky):
        world.chat(line)
    controls.pause(deps, paused, reason="legal review", until=None, by="ops@test")
    with transaction(deps.sessions) as s:
        raise_warning(
            s,
            kind="webhook_subscription.disabled",
            subject="webhook_subscription sub_1",
            summary="webhook subscription sub_1 is disabled",
            occurred_at=None,
            event_id=None,
        )
    sweep(deps, Collector())
    numbers = Numbers()
    numbers.feed(httpx.get(page_url, timeout=10).text)
    got = numbers.values
    assert got[(paused, "held")].startswith("line_paused: legal review, by ops@test")
    assert "legal review" in got[(paused, "paused")]
    assert int(got[(paused, "remaining")]) == 1
    assert got[(risky, "reputation")] == "AT_RISK"
    assert got[(risky, "pace")].startswith("100000/min")
    assert got[(risky, "held")] == "-"
    page = httpx.get(page_url, timeout=10).text
    assert "webhook_subscription.disabled" in page
    assert "ACCOUNT PAUSED" not in page
    controls.pause(deps, None, reason="incident", until=None, by="ops@test")
    numbers = Numbers()
    numbers.feed(httpx.get(page_url, timeout=10).text)
    assert numbers.values[(None, "account_paused")].startswith("ACCOUNT PAUSED: incident")
    doc = httpx.get(page_url + "status.json", timeout=10).json()
    assert doc["account_paused"].startswith("incident")
    assert [w["kind"] for w in doc["warnings"]] == ["webhook_subscription.disabled"]
