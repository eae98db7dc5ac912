"""The real CLI and a real `celery worker` subprocess, against real servers and the simulator."""

from __future__ import annotations

import datetime as dt
import os
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
from tests.support.world import World
from worker.config import Settings
from worker.deps import Deps
from worker.queue.publish import worker_command

pytestmark = pytest.mark.acceptance


@pytest.fixture
def celery_worker(settings: Settings, tmp_path: Path) -> Iterator[subprocess.Popen[bytes]]:
    from worker.queue.app import app, configure

    configure(settings)
    log = (tmp_path / "worker.log").open("wb")
    name = f"acc-{uuid.uuid4().hex[:6]}@%h"
    proc = subprocess.Popen(
        worker_command(pool="threads", concurrency=16, hostname=name),
        env=env_for(settings),
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    deadline = time.monotonic() + 30
    while not app.control.ping(timeout=0.5):
        assert proc.poll() is None, (tmp_path / "worker.log").read_text()
        assert time.monotonic() < deadline, "worker did not answer ping"
    yield proc
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)
    log.close()


def wait_for(predicate, timeout: float = 30.0) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.1)


def status_of(deps: Deps, chat: uuid.UUID) -> str | None:
    with deps.sessions() as s:
        return s.execute(text("SELECT status FROM share_days WHERE chat_id = :c"), {"c": chat}).scalar()


def audit_rows(deps: Deps) -> list[tuple[str, str | None, str]]:
    with deps.sessions() as s:
        return [
            tuple(r)
            for r in s.execute(text("SELECT action, chat_ref, outcome FROM audit_events ORDER BY id"))
        ]


def test_share_wait_runs_it_here(world: World, deps: Deps, settings: Settings) -> None:
    world.line()
    chat = world.chat()
    done = cardshare(settings, "share", str(chat), "--wait")
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith(f"shared: chat {chat}")
    assert world.sim.share_count(str(chat)) == 1
    again = cardshare(settings, "share", str(chat), "--wait")
    assert again.returncode == 1
    assert "already_shared" in again.stderr
    assert len(again.stderr.strip().splitlines()) == 1
    assert world.sim.share_count(str(chat)) == 1


@pytest.mark.parametrize(
    ("kind", "code", "needle"),
    [
        ("malformed", 2, "is malformed"),
        ("unknown", 2, "is unknown to cardshare"),
        ("sms", 1, "not_imessage"),
        ("no_outbound", 1, "no_outbound"),
        ("inactive", 1, "card_inactive"),
    ],
)
def test_share_refusals_are_one_line_and_write_only_the_audit(
    world: World, deps: Deps, settings: Settings, kind: str, code: int, needle: str
) -> None:
    line = world.line()
    if kind == "malformed":
        ref = "not-a-uuid"
    elif kind == "unknown":
        ref = str(uuid.uuid4())
    elif kind == "sms":
        ref = str(world.chat(line, service="SMS"))
    elif kind == "no_outbound":
        ref = str(world.chat(line, outbound_at=False))
    else:
        ref = str(world.chat(world.line("+13334445555", active=False)))
    done = cardshare(settings, "share", ref)
    assert done.returncode == code
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith("cardshare: ")
    assert needle in lines[0]
    assert ref[:36] in lines[0]
    with deps.sessions() as s:
        assert s.execute(text("SELECT count(*) FROM share_days")).scalar() == 0
        assert s.execute(text("SELECT count(*) FROM attempts")).scalar() == 0
    assert audit_rows(deps) == [("share", ref, "refused")]
    assert world.sim.shares()["total_accepted"] == 0


def test_bad_setting_exits_2_naming_the_variable(settings: Settings) -> None:
    done = cardshare(settings, "sweep", CARDSHARE_SWEEP_INTERVAL="every so often")
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1
    assert lines[0].startswith("cardshare: CARDSHARE_SWEEP_INTERVAL cannot parse 'every so often'")


def test_api_key_never_reaches_output(world: World, settings: Settings) -> None:
    world.line()
    chat = world.chat()
    done = cardshare(settings, "share", str(chat), "--wait", CARDSHARE_LOG_LEVEL="DEBUG")
    assert done.returncode == 0, done.stderr
    key = settings.linq_api_key.get()
    assert key not in done.stdout
    assert key not in done.stderr


def test_enqueued_share_runs_on_a_real_worker(
    world: World, deps: Deps, settings: Settings, celery_worker: subprocess.Popen[bytes]
) -> None:
    world.line()
    chat = world.chat()
    done = cardshare(settings, "share", str(chat))
    assert done.returncode == 0, done.stderr
    assert f"enqueued chat {chat}" in done.stdout
    wait_for(lambda: status_of(deps, chat) == "succeeded")
    assert world.sim.share_count(str(chat)) == 1
    assert audit_rows(deps) == [("share", str(chat), "enqueued")]


def test_sweep_through_a_real_worker_shares_each_due_chat_once(
    world: World, deps: Deps, settings: Settings, celery_worker: subprocess.Popen[bytes], today: dt.date
) -> None:
    line = world.line()
    due = [world.chat(line) for _ in range(30)]
    world.chat(line, service="SMS")
    flaky = due[:3]
    world.sim.add_faults(
        [
            {
                "path": "/share_contact_card$",
                "chat_id": str(c),
                "mode": "respond",
                "status": 503,
                "code": 3006,
                "times": 2,
            }
            for c in flaky
        ]
    )
    first = cardshare(settings, "sweep")
    assert first.returncode == 0, first.stderr
    assert "enqueued 30" in first.stdout
    wait_for(lambda: all(status_of(deps, c) == "succeeded" for c in due))
    second = cardshare(settings, "sweep")
    assert "enqueued 0" in second.stdout
    time.sleep(0.5)
    shares = world.sim.shares()
    assert shares["total_accepted"] == 30
    assert all(n == 1 for n in shares["per_chat"].values())
    with deps.sessions() as s:
        per_chat: dict[Any, int] = dict(
            s.execute(text("SELECT chat_id, count(*) FROM attempts GROUP BY chat_id")).all()
        )
    assert all(per_chat[c] == 3 for c in flaky)
    assert sum(per_chat.values()) == 30 + 2 * len(flaky)


def test_demo_prints_the_summary() -> None:
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("CARDSHARE_", "LINQ_", "DATABASE_", "REDIS_"))
    }
    done = subprocess.run(
        [sys.executable, "-c", "from worker.cli.main import main; main()", "demo", "--chats", "120"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "second sweep: 0 new shares" in done.stdout
    assert "due (enqueued by sweep 1)" in done.stdout
