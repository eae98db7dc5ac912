"""`cardshare import`, `cardshare sync` and `cardshare webhooks` as real subprocesses, against real
PostgreSQL and the simulator."""

from __future__ import annotations

import datetime as dt
import json
import selectors
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import text

from tests.support.cli import cardshare, env_for
from tests.support.receiver import SECRET
from tests.support.world import World
from worker.config import Settings
from worker.deps import Deps
from worker.simulator import SimulatorAdmin

pytestmark = pytest.mark.acceptance

LINE = "+12223334444"
RECENT = (dt.datetime.now(dt.UTC) - dt.timedelta(hours=2)).replace(microsecond=0).isoformat()


def chat_ids(deps: Deps) -> set[str]:
    with deps.sessions() as s:
        return {str(c) for c in s.execute(text("SELECT id FROM chats")).scalars()}


def test_import_reports_each_bad_row_keeps_the_good_ones_and_says_so_in_its_exit_code(
    tmp_path: Path, deps: Deps, settings: Settings
) -> None:
    good = [str(uuid.uuid4()) for _ in range(2)]
    path = tmp_path / "from-old-crm.csv"
    path.write_text(
        "chat_id,line,service,last_outbound_at\n"
        f"{good[0]},{LINE},iMessage,{RECENT}\n"
        f"{uuid.uuid4()},555-1234,iMessage,{RECENT}\n"
        f"{good[1]},{LINE},SMS,{RECENT}\n"
        f"{uuid.uuid4()},{LINE},iMessage,\n"
    )
    for _ in range(2):  # the second run changes nothing and says the same
        done = cardshare(settings, "import", str(path))
        assert done.returncode == 1, done.stderr
        assert done.stderr.splitlines() == [
            f"cardshare: {path}:3: line '555-1234' is not an E.164 phone number (+, country code, number)",
            f"cardshare: {path}:5: last_outbound_at is empty "
            "(a chat without an outbound message is never due)",
        ]
        assert done.stdout.strip() == "imported 2 rows from from-old-crm.csv; 2 bad rows skipped"
        assert chat_ids(deps) == set(good)
    with deps.sessions() as s:
        audits = s.execute(text("SELECT action, outcome FROM audit_events")).all()
    assert [tuple(a) for a in audits] == [("import", "partial"), ("import", "partial")]

    clean = tmp_path / "clean.jsonl"
    clean.write_text(
        json.dumps({"chat_id": good[0], "line": LINE, "service": "iMessage", "last_outbound_at": RECENT})
    )
    done = cardshare(settings, "import", str(clean))
    assert (done.returncode, done.stderr, done.stdout.strip()) == (0, "", "imported 1 row from clean.jsonl")


@pytest.mark.parametrize(
    ("content", "needle"),
    [
        (None, "no such file"),
        ("id,phone\n1,2\n", "the header lacks chat_id, line, service, last_outbound_at"),
    ],
)
def test_import_refuses_an_unusable_file_in_one_line(
    tmp_path: Path, deps: Deps, settings: Settings, content: str | None, needle: str
) -> None:
    path = tmp_path / "chats.csv"
    if content is not None:
        path.write_text(content)
    done = cardshare(settings, "import", str(path))
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith(f"cardshare: {'cannot read ' if content is None else ''}{path}")
    assert needle in lines[0]
    assert chat_ids(deps) == set()


def test_sync_pages_through_linq_and_prints_its_counts(
    world: World, sim: SimulatorAdmin, deps: Deps, settings: Settings
) -> None:
    world.line(LINE)
    chats: list[dict[str, Any]] = [
        {"id": str(uuid.uuid4()), "line": LINE, "messages": [{"is_from_me": i % 3 == 0, "sent_at": RECENT}]}
        for i in range(150)
    ]
    sim.add_chats(chats)  # type: ignore[arg-type]
    # The event path off: with it, the sync itself would queue (or, at the CLI's pace, hold) the
    # chats it found due, and the manual share below would find its chat-day taken
    # (tests/integration/sharing/test_first_outbound.py covers that path).
    done = cardshare(settings, "sync", CARDSHARE_SHARE_ON_OUTBOUND="false")
    assert done.returncode == 0, done.stderr
    out = done.stdout.strip()
    assert out.startswith("sync: 1 lines (0 resumed), 2 pages, 150 chats listed, 150 iMessage chats recorded")
    assert "150 chats looked up (150 message pages), 50 with outbound found" in out
    assert chat_ids(deps) == {c["id"] for c in chats}
    shared = cardshare(settings, "share", chats[0]["id"], "--wait")
    assert shared.returncode == 0, shared.stderr

    bad = cardshare(settings, "sync", "--line", "12223334444")
    assert bad.returncode == 2
    assert bad.stderr.strip() == "cardshare: line '12223334444' is not an E.164 phone number (+ and digits)"


@pytest.fixture
def receiver(settings: Settings, tmp_path: Path) -> Iterator[tuple[str, subprocess.Popen[str], Path]]:
    log = tmp_path / "receiver.log"
    with log.open("w") as errors:
        proc = subprocess.Popen(
            [sys.executable, "-c", "from worker.cli.main import main; main()", "webhooks", "--port", "0"],
            env=env_for(settings, CARDSHARE_WEBHOOK_SECRETS=SECRET, CARDSHARE_LOG_LEVEL="DEBUG"),
            stdout=subprocess.PIPE,
            stderr=errors,
            text=True,
            start_new_session=True,
        )
    try:
        assert proc.stdout is not None
        with selectors.DefaultSelector() as sel:
            sel.register(proc.stdout, selectors.EVENT_READ)
            assert sel.select(timeout=30), f"receiver did not start: {log.read_text()}"
        first = proc.stdout.readline().strip()
        assert first.startswith("receiving Linq webhooks at http://127.0.0.1:"), first + log.read_text()
        yield first.rsplit(" ", 1)[1], proc, log
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)
        if proc.stdout is not None:
            proc.stdout.close()


def test_the_webhooks_command_receives_signed_deliveries_and_never_logs_the_secret(
    receiver: tuple[str, subprocess.Popen[str], Path],
    world: World,
    sim: SimulatorAdmin,
    deps: Deps,
    settings: Settings,
) -> None:
    url, proc, log = receiver
    world.line(LINE)
    chat = str(uuid.uuid4())
    sim.add_chats([{"id": chat, "line": LINE}])
    for version in ("2025-01-01", "2026-02-03"):
        answer = sim.deliver_webhook(url, SECRET, version=version, chat_id=chat, event_id=f"evt-{version}")
        assert answer["status"] == 200, log.read_text()
    forged = sim.deliver_webhook(url, "whsec_bm90IHRoZSByaWdodCBzZWNyZXQ=", chat_id=str(uuid.uuid4()))
    assert forged["status"] == 401
    assert chat_ids(deps) == {chat}
    # The chat the webhook recorded is due: the card goes in once.
    done = cardshare(settings, "share", chat, "--wait")
    assert done.returncode == 0, done.stderr
    assert sim.share_count(chat) == 1

    proc.send_signal(signal.SIGTERM)
    assert proc.wait(15) == 0
    lines = [json.loads(line) for line in log.read_text().splitlines() if line.startswith("{")]
    events = [line["event"] for line in lines]
    assert events.count("webhook.recorded") == 2
    rejected = [line for line in lines if line["event"] == "webhook.rejected"]
    assert [r["reason"] for r in rejected] == ["webhook-signature matches none of the configured secrets"]
    text_out = log.read_text()
    assert SECRET not in text_out
    assert SECRET.removeprefix("whsec_") not in text_out


def test_the_webhooks_command_needs_a_secret(settings: Settings) -> None:
    started = time.monotonic()
    done = cardshare(settings, "webhooks", "--port", "0")
    assert done.returncode == 2
    assert done.stderr.strip().startswith("cardshare: CARDSHARE_WEBHOOK_SECRETS has no whsec_ secret")
    assert time.monotonic() - started < 60
