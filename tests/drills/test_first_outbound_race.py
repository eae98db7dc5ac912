"""Drill: webhooks and sweeps race for the same chat-days while workers are SIGKILLed (issue 16
point 4). The event path (docs/decisions.md §17) and the sweep both mark chat-days; the (chat,
day) row and the claim must keep every chat at exactly one share, and none missed."""

from __future__ import annotations

import datetime as dt
import random
import threading
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import pytest

from tests.support.drills import SHARE, Figures, Supervisor, check, day_counts, scaled, settle, sweep_now
from tests.support.procs import CONSUMING_S, Procs, timeout_for, worker_consuming
from tests.support.receiver import SECRET, ReceiverServer
from tests.support.world import World
from worker.config import Secret, Settings
from worker.deps import Deps
from worker.ingest.webhooks import create_app
from worker.rules.facts import ChatActivity
from worker.store.chats import record_activity
from worker.store.session import transaction

pytestmark = pytest.mark.drill

CHATS = scaled(240, 1200)
DELIVERIES = 3  # message.sent per chat, from several threads, in shuffled order
KILL_EVERY_S = 4.0
DELIVER_S = float(scaled(240, 600))  # every delivery answered, with kills and sweeps going on
SETTLE_S = 240.0


@pytest.fixture
def receiver(settings: Settings, deps: Deps, procs: Procs) -> Iterator[ReceiverServer]:
    from worker.queue.app import app
    from worker.queue.publish import event_path

    s = settings.replace(webhook_secrets=(Secret(SECRET),))
    with ReceiverServer(create_app(s, deps.sessions, first_outbound=event_path(app, deps))) as server:
        yield server


@pytest.mark.timeout(timeout_for(CONSUMING_S, DELIVER_S, SETTLE_S))
def test_webhooks_and_sweeps_race_while_workers_are_killed(
    world: World, deps: Deps, procs: Procs, receiver: ReceiverServer, today: dt.date
) -> None:
    from worker.queue.app import app

    fig = Figures("webhooks and sweeps race for the same chat-days while workers are SIGKILLed")
    line = world.line()
    sim = world.sim
    chats = sorted(uuid.uuid4() for _ in range(CHATS))
    sim.add_chats([{"id": str(c), "line": line, "service": "iMessage"} for c in chats])
    # Half the chats are known already (a sync or an import recorded them, without the event
    # path): the sweep may mark them while their webhooks mark them too. The other half only a
    # webhook makes due; a sweep can reach them only after that webhook's commit.
    known = chats[: CHATS // 2]
    when = dt.datetime.now(dt.UTC) - dt.timedelta(minutes=30)
    with transaction(deps.sessions) as s:
        record_activity(s, [ChatActivity(c, line, service="iMessage", outbound_at=when) for c in known])
    # Each share call takes 300 ms at Linq, so kills land mid-call.
    sim.add_faults([{"path": SHARE, "mode": "pass", "latency_ms": 300}])

    supervisor = Supervisor(lambda: procs.worker(pool="threads", concurrency=16))
    try:
        procs.beat()  # recovery every 3 s, the sweep every 30 s
        worker_consuming(app)
        stop = threading.Event()
        kills = 0
        sweeps = 0

        def killer() -> None:
            nonlocal kills
            while not stop.wait(KILL_EVERY_S):
                supervisor.proc.kill()
                kills += 1

        def sweeper() -> None:
            nonlocal sweeps
            while not stop.wait(0.5):
                sweep_now(deps)
                sweeps += 1

        deliveries = [c for c in chats for _ in range(DELIVERIES)]
        random.Random(16).shuffle(deliveries)

        def deliver(chat: uuid.UUID) -> int:
            sent = dt.datetime.now(dt.UTC).isoformat()
            return int(sim.deliver_webhook(receiver.url, SECRET, chat_id=str(chat), sent_at=sent)["status"])

        threads = [
            threading.Thread(target=killer, daemon=True),
            threading.Thread(target=sweeper, daemon=True),
        ]
        for t in threads:
            t.start()
        started = time.monotonic()
        try:
            with ThreadPoolExecutor(max_workers=8) as pool:
                statuses = list(pool.map(deliver, deliveries))
            delivered_s = time.monotonic() - started
            assert delivered_s < DELIVER_S, f"deliveries took {delivered_s:.0f}s"
        finally:
            stop.set()
            for t in threads:
                t.join(60)
        assert statuses == [200] * len(deliveries)
        settle(deps, today, chats, timeout=SETTLE_S, fig=fig)
    finally:
        # Before the procs fixture stops the workers: else it would start new ones.
        supervisor.stop()
    report = check(deps, sim, today)
    fig.add(
        chats=CHATS,
        deliveries=len(deliveries),
        kills=kills,
        restarts=supervisor.restarts,
        sweeps_from_the_test=sweeps,
        delivered_s=round(delivered_s, 1),
        counts=day_counts(deps, today, chats),
    )
    fig.add_check(report)
    fig.write()
    assert kills >= 3, "the drill must kill workers while the race runs"
    assert report.missed == []
    assert report.duplicates == []
    assert report.succeeded == CHATS
    assert all(sim.share_count(str(c)) == 1 for c in chats)
