"""Line safety end to end: the real `cardshare line ...`, `status`, `sweep`, `share`, `webhooks`
and `warnings` commands, real celery worker and beat processes, the simulator over loopback."""

from __future__ import annotations

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

from tests.support.procs import Procs, wait_until, worker_consuming
from tests.support.receiver import SECRET
from tests.support.world import World
from worker.config import Settings
from worker.deps import Deps
from worker.queue.app import app as celery_app
from worker.simulator import SimulatorAdmin

pytestmark = pytest.mark.acceptance

CARDSHARE = [sys.executable, "-c", "from worker.cli.main import main; main()"]
A, B = "+12223334444", "+13334445555"


@pytest.fixture
def procs(settings: Settings, tmp_path: Path) -> Iterator[Procs]:
    from worker.queue.app import configure

    configure(settings)
    p = Procs(settings, tmp_path)
    yield p
    p.stop_all()


def run_cli(procs: Procs, *args: str, **extra: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*CARDSHARE, *args], env=procs.env(**extra), capture_output=True, text=True, timeout=120, check=False
    )


def shared(sim: SimulatorAdmin, chats: list[uuid.UUID]) -> int:
    per_chat = sim.shares()["per_chat"]
    return sum(int(per_chat.get(str(c), 0)) for c in chats)


def statuses(deps: Deps, chats: list[uuid.UUID]) -> list[tuple[str, str | None]]:
    with deps.sessions() as s:
        rows = {
            r.chat_id: (r.status, r.reason)
            for r in s.execute(
                text("SELECT chat_id, status, reason FROM share_days WHERE chat_id = ANY(:c)"), {"c": chats}
            )
        }
    return [rows[c] for c in chats]


def test_a_paused_line_waits_through_worker_and_beat_and_resume_shares_it_the_same_day(
    procs: Procs, world: World, deps: Deps, sim: SimulatorAdmin
) -> None:
    world.line(A)
    world.line(B)
    held = [world.chat(A) for _ in range(3)]
    other = world.chat(B)
    paused = run_cli(procs, "line", "pause", A, "--reason", "campaign review", "--until", "2h")
    assert paused.returncode == 0, paused.stderr
    assert paused.stdout.startswith(f"paused {A} until ")
    listed = json.loads(run_cli(procs, "line", "list", "--json").stdout)
    by_line = {ln["line"]: ln for ln in listed["lines"]}
    assert "campaign review" in by_line[A]["paused"]
    assert by_line[B]["paused"] is None

    procs.worker(concurrency=8)
    worker_consuming(celery_app)
    procs.beat(CARDSHARE_RECOVER_INTERVAL="2", CARDSHARE_RELEASE_INTERVAL="1")
    swept = run_cli(procs, "sweep")
    assert swept.returncode == 0, swept.stderr
    assert "held 3" in swept.stdout
    wait_until(lambda: shared(sim, [other]) == 1, 30, what="the open line's share")
    # Beat's release passes every second do not let the paused line's chats go.
    time.sleep(3)
    assert shared(sim, held) == 0
    assert {s for s, _ in statuses(deps, held)} == {"held"}
    st = json.loads(run_cli(procs, "status", "--json").stdout)
    line_a = next(ln for ln in st["lines"] if ln["line"] == A)
    assert line_a["held"] == 3
    assert line_a["held_by_reason"] == {"line_paused": 3}
    assert line_a["state"]["held"].startswith("line_paused: campaign review")
    text_status = run_cli(procs, "status").stdout
    assert f"{A} " in text_status
    assert "held: line_paused: campaign review" in text_status

    resumed = run_cli(procs, "line", "resume", A)
    assert resumed.returncode == 0, resumed.stderr
    assert resumed.stdout.startswith(f"resumed {A}: 3 held chat-day(s) go out at the line's pace")
    wait_until(lambda: shared(sim, held) == 3, 30, what="the resumed line's shares")
    with deps.sessions() as s:
        audit = [
            tuple(r)
            for r in s.execute(text("SELECT action, chat_ref, outcome FROM audit_events ORDER BY id"))
        ]
    assert audit == [("line.pause", A, "paused"), ("line.resume", A, "resumed")]


def test_the_cap_holds_through_the_worker_even_for_manual_shares(
    procs: Procs, world: World, deps: Deps, sim: SimulatorAdmin
) -> None:
    world.line(A)
    chats = [world.chat(A) for _ in range(4)]
    assert run_cli(procs, "line", "set", A, "--pace", "2").returncode == 0
    procs.worker(concurrency=8)
    worker_consuming(celery_app)
    assert run_cli(procs, "sweep").returncode == 0  # the first slot goes now, the others later
    wait_until(lambda: shared(sim, chats) == 1, 30, what="the first slot's share")
    # A chat-day with its slot waits for it, whoever asks...
    waiting = [c for c, (status, _) in zip(chats, statuses(deps, chats), strict=True) if status == "held"]
    assert len(waiting) == 3
    assert run_cli(procs, "share", str(waiting[0])).returncode == 0
    # ...and chats no sweep has reached skip the schedule, not the cap: one more fits in the
    # minute, not three.
    extra = [world.chat(A) for _ in range(3)]
    for chat in extra:
        done = run_cli(procs, "share", str(chat))
        assert done.returncode == 0, done.stderr
    chats += extra
    wait_until(
        lambda: sum(1 for s, _ in statuses(deps, chats) if s in ("succeeded", "held")) == 7,
        30,
        what="outcomes",
    )
    time.sleep(2)
    assert shared(sim, chats) == 2
    pace = sim.pace()["lines"][A]
    assert pace["max_in_window"] == 2
    reasons = [r for s, r in statuses(deps, chats) if s == "held"]
    assert len(reasons) == 5
    assert all(r and r.startswith("pace:") for r in reasons)


def test_status_and_line_list_say_when_a_line_cannot_finish_today(
    procs: Procs, world: World, deps: Deps
) -> None:
    world.line(A)
    with deps.sessions.begin() as s:
        s.execute(
            text(
                "INSERT INTO chats (id, line_phone, service, first_outbound_at, last_outbound_at) "
                "SELECT gen_random_uuid(), :p, 'iMessage', now() - interval '1 hour', "
                "now() - interval '1 hour' FROM generate_series(1, 3000)"
            ),
            {"p": A},
        )
    assert run_cli(procs, "line", "set", A, "--pace", "1").returncode == 0
    out = run_cli(procs, "status")
    assert out.returncode == 0, out.stderr
    assert f"line {A} cannot finish today: 3,000 left, about" in out.stdout
    listed = run_cli(procs, "line", "list")
    row = next(line for line in listed.stdout.splitlines() if line.startswith(A))
    assert "1/min (line)" in row
    assert "cannot finish" in row
    doc = json.loads(run_cli(procs, "line", "list", "--json").stdout)
    [line] = doc["lines"]
    assert (line["remaining_today"], line["can_finish_today"], line["pace_per_minute"]) == (3000, False, 1)


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (("line", "pause", A, "--until", "yesterday"), "--until 'yesterday' is neither a duration"),
        (("line", "pause", A, "--all"), "give a LINE (E.164) or --all, not both"),
        (("line", "pause"), "give a LINE (E.164) or --all, not both"),
        (("line", "pause", "12345"), "is not E.164"),
        (("line", "pause", "+19998887777"), "line +19998887777 is unknown to cardshare"),
        (("line", "set", A, "--timezone", "Mars/Base"), "--timezone 'Mars/Base' is not an IANA time zone"),
        (("line", "set", A, "--hours", "20:00-02:00"), "a window across midnight would belong to two days"),
        (("line", "set", A, "--pace", "fast"), "--pace 'fast' is not a whole number"),
        (("line", "set", A), "nothing to set"),
        (("warnings", "ack", "99"), "warning 99 is not open"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(
    procs: Procs, world: World, deps: Deps, args: tuple[str, ...], needle: str
) -> None:
    world.line(A)
    done = run_cli(procs, *args)
    assert done.returncode == 2, done.stdout + done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert needle in lines[0]
    with deps.sessions() as s:
        row = s.execute(text("SELECT paused_at, timezone, hours_start, pace_per_minute FROM lines")).one()
    assert tuple(row) == (None, None, None, None)


@pytest.fixture
def webhooks(procs: Procs, settings: Settings, tmp_path: Path) -> Iterator[tuple[str, subprocess.Popen[str]]]:
    log = tmp_path / "receiver.log"
    with log.open("w") as errors:
        proc = subprocess.Popen(
            [*CARDSHARE, "webhooks", "--port", "0"],
            env=procs.env(CARDSHARE_WEBHOOK_SECRETS=SECRET),
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
        yield first.rsplit(" ", 1)[1], proc
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            proc.wait(15)
        if proc.stdout is not None:
            proc.stdout.close()


def test_webhooks_keep_state_fresh_through_the_receiver_and_a_worker(
    procs: Procs,
    world: World,
    deps: Deps,
    sim: SimulatorAdmin,
    webhooks: tuple[str, subprocess.Popen[str]],
) -> None:
    url, _ = webhooks
    world.line(A)
    procs.worker(concurrency=4)
    worker_consuming(celery_app)
    sim.set_webhook_target(url, SECRET)

    def card_active() -> Any:
        with deps.sessions() as s:
            return s.execute(
                text("SELECT card_active FROM lines WHERE phone_number = :p"), {"p": A}
            ).scalar_one()

    # contact_card.deleted: the receiver hands the line to a worker, which reads the card from Linq.
    sim.delete_card(A)
    wait_until(lambda: card_active() is False, 30, what="the card refresh task")
    # phone_number.status_updated: the line is FLAGGED at once.
    sim.set_line_state(A, status="FLAGGED")
    wait_until(
        lambda: (
            "line_flagged"
            in (json.loads(run_cli(procs, "line", "list", "--json").stdout)["lines"][0]["held"] or "")
        ),
        30,
        what="the status webhook",
    )
    # An expired API token: an error line, a warning on status until acknowledged.
    answer = sim.deliver_webhook(
        url, SECRET, event_type="api_token.expired", token_id="tok_7", token_prefix="lq_x"
    )
    assert answer["status"] == 200, answer
    out = run_cli(procs, "status").stdout
    assert "WARNING #1 api_token.expired (api_token tok_7): API token lq_x (cardshare) expired" in out
    listed = run_cli(procs, "warnings", "list")
    assert "api_token.expired" in listed.stdout
    ack = run_cli(procs, "warnings", "ack", "1")
    assert ack.returncode == 0, ack.stderr
    assert "WARNING" not in run_cli(procs, "status").stdout
    assert json.loads(run_cli(procs, "warnings", "list", "--all", "--json").stdout)[0]["open"] is False
