"""`cardshare demo`: the whole pipeline on one machine, against the simulator, in under a minute.

Embedded PostgreSQL and Redis in a temporary directory, the simulator seeded with a few lines
(one card inactive) and a few hundred chats, a real `celery worker` subprocess, two sweeps.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import os
import random
import shutil
import signal
import subprocess
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from rich.console import Console
from rich.table import Table

from worker import runtime
from worker.bootstrap import resolve
from worker.config import Secret, Settings
from worker.errors import CardshareError
from worker.queue.app import app
from worker.queue.publish import worker_command
from worker.queue.tasks import run_pass
from worker.rules.cadence import why_not_due
from worker.rules.facts import ChatActivity
from worker.sharing.passes import SweepReport
from worker.simulator import SimulatorServer
from worker.simulator.client import ChatSpec
from worker.store import reports
from worker.store.chats import record_activity
from worker.store.session import transaction

DEMO_KEY = "demo-key-not-a-secret"
LINES = [("+12125550101", True), ("+12125550102", True), ("+12125550103", False)]


@dataclass(frozen=True)
class Seeded:
    chats: int
    flaky: set[uuid.UUID]


def seed(sim: SimulatorServer, settings: Settings, n_chats: int, rng: random.Random) -> Seeded:
    """Lines, cards and chats in the simulator; the same chats recorded in PostgreSQL."""
    admin = sim.admin
    admin.add_cards(
        [
            {"phone_number": p, "first_name": "Acme", "last_name": f"Line {i + 1}", "is_active": active}
            for i, (p, active) in enumerate(LINES)
        ]
    )
    now = dt.datetime.now(dt.UTC)
    chats: list[ChatSpec] = []
    facts: list[ChatActivity] = []
    flaky: set[uuid.UUID] = set()
    for i in range(n_chats):
        chat_id = uuid.UUID(int=rng.getrandbits(128), version=4)
        line = LINES[i % len(LINES)][0]
        service: Literal["iMessage", "SMS"] = "SMS" if i % 10 == 3 else "iMessage"
        outbound = None if i % 10 == 7 else now - dt.timedelta(hours=rng.randint(1, 72))
        chats.append(
            {
                "id": str(chat_id),
                "line": line,
                "service": service,
                "messages": []
                if outbound is None
                else [{"is_from_me": True, "sent_at": outbound.isoformat()}],
            }
        )
        facts.append(ChatActivity(chat_id, line, service=service, is_group=False, outbound_at=outbound))
        if i % 20 == 0 and service == "iMessage" and outbound is not None and line != LINES[2][0]:
            flaky.add(chat_id)
    admin.add_chats(chats)
    admin.add_faults(
        [
            {
                "path": "/share_contact_card$",
                "chat_id": str(c),
                "mode": "respond",
                "status": 503,
                "code": 3006,
                "times": 2,
            }
            for c in sorted(flaky)
        ]
    )
    sessions = runtime.get().sessions
    with transaction(sessions) as s:
        record_activity(s, facts)
    return Seeded(len(chats), flaky)


@contextlib.contextmanager
def celery_worker(settings: Settings, log_path: Path) -> Iterator[subprocess.Popen[bytes]]:
    """A real `celery worker` process, stopped with SIGTERM (warm shutdown) at the end."""
    # The worker gets the demo's settings; its log file keeps INFO lines (the demo prints WARNING).
    env = {**os.environ, **settings.replace(log_format="json", log_level="INFO").to_env()}
    argv = worker_command(
        pool="threads", concurrency=32, loglevel="WARNING", hostname=f"demo-{os.getpid()}@%h"
    )
    with log_path.open("wb") as log:
        proc = subprocess.Popen(argv, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        try:
            yield proc
        finally:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                try:
                    proc.wait(20)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait(5)


def wait_for_worker(timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if app.control.ping(timeout=0.5):
            return
    raise CardshareError("the demo's celery worker did not come up; see its log")


def wait_until_settled(day: dt.date, timeout: float = 40.0) -> dict[str, int]:
    """Until no chat-day of `day` is queued or held (retry waits count as settled)."""
    sessions = runtime.get().sessions
    deadline = time.monotonic() + timeout
    while True:
        with sessions() as s:
            counts = reports.day_counts(s, day)
        if not counts.get("queued") and not counts.get("claimed"):
            return counts
        if time.monotonic() > deadline:
            raise CardshareError(f"chat-days did not settle in {timeout:.0f}s: {counts}")
        time.sleep(0.2)


def not_due_reasons(now: dt.datetime) -> Counter[str]:
    """Why each chat that was not enqueued is not due (the pure rule over every chat)."""
    deps = runtime.get().deps
    reasons: Counter[str] = Counter()
    with deps.sessions() as s:
        for _chat_id, facts in reports.chat_facts(s):
            why = why_not_due(facts, now=now, policy=deps.policy, shared_today=False)
            if why is not None:
                reasons[why.value] += 1
    return reasons


def attempt_stats(day: dt.date) -> dict[str, int]:
    with runtime.get().sessions() as s:
        return reports.attempt_stats(s, day)


def run_demo(*, chats: int, keep: bool, echo: Callable[[str], None]) -> None:
    started = time.monotonic()
    data_dir = Path(tempfile.mkdtemp(prefix="cardshare-demo-"))
    rng = random.Random(20261124)
    sim = SimulatorServer(api_key=DEMO_KEY)
    base_url = sim.start()
    booted = None
    try:
        # The demo never touches a configured database: its own embedded services, always.
        settings = Settings(
            linq_api_key=Secret(DEMO_KEY),
            linq_base_url=base_url,
            data_dir=data_dir,
            retry_base_s=0.05,
            log_format="text",
            log_level="WARNING",
            # The demo's lines are the simulator's: a pace that lets 80 chats a line go out at
            # once keeps the demo under a minute (real lines keep CARDSHARE_LINE_SHARES_PER_MINUTE).
            line_shares_per_minute=6000,
        )
        echo(f"cardshare demo: starting embedded PostgreSQL and Redis in {data_dir}")
        booted = resolve(settings)
        settings = booted.settings
        seeded = seed(sim, settings, chats, rng)
        echo(
            f"seeded {seeded.chats} chats on {len(LINES)} lines (card of {LINES[2][0]} inactive); "
            f"simulator at {base_url}"
        )
        with celery_worker(settings, data_dir / "worker.log"):
            wait_for_worker()
            echo("worker up (threads pool, 32 threads); sweep 1 ...")
            now = dt.datetime.now(dt.UTC)
            first = run_pass("sweep")
            day = first.day
            counts = wait_until_settled(day)
            shares_after_first = sim.admin.shares()["total_accepted"]
            echo("sweep 2 ...")
            second = run_pass("sweep")
            wait_until_settled(day)
            new_shares = sim.admin.shares()["total_accepted"] - shares_after_first
        _print_summary(
            echo,
            first,
            second,
            counts,
            not_due_reasons(now),
            attempt_stats(day),
            shares_after_first,
            new_shares,
            len(seeded.flaky),
        )
        echo(f"done in {time.monotonic() - started:.1f}s")
        if new_shares != 0 or counts.get("succeeded", 0) != first.enqueued:
            raise CardshareError("demo invariant broken: see the table above")
    finally:
        if booted is not None:
            booted.close()
        sim.stop()
        if keep:
            echo(f"kept {data_dir} (worker.log, pg/, redis/)")
        else:
            shutil.rmtree(data_dir, ignore_errors=True)


def _print_summary(
    echo: Callable[[str], None],
    first: SweepReport,
    second: SweepReport,
    counts: dict[str, int],
    not_due: Counter[str],
    attempts: dict[str, int],
    accepted: int,
    new_shares: int,
    flaky: int,
) -> None:
    table = Table(title="cardshare demo: today", show_header=True, header_style="bold")
    table.add_column("what")
    table.add_column("chats", justify="right")
    table.add_row("due (enqueued by sweep 1)", str(first.enqueued))
    table.add_row("shared (succeeded)", str(counts.get("succeeded", 0)))
    table.add_row("  simulator accepted shares", str(accepted))
    for reason, n in sorted(not_due.items()):
        table.add_row(f"skipped: {reason}", str(n))
    for status in ("skipped", "failed"):
        if counts.get(status):
            table.add_row(f"{status} at share time", str(counts[status]))
    table.add_row("retried (chats; 503 then success)", f"{attempts['retried_chats']} (seeded {flaky})")
    table.add_row("  HTTP retries", str(attempts["retries"]))
    table.add_row("unknown outcome (day)", str(counts.get("unknown", 0)))
    table.add_row("sweep 2 enqueued", str(second.enqueued))
    Console(force_terminal=False, width=70).print(table)
    echo(f"second sweep: {new_shares} new shares")
