"""Drills 1 and 2: workers killed while Linq holds the share request."""

from __future__ import annotations

import datetime as dt
import time
import uuid

import pytest

from tests.support.drills import (
    SHARE,
    Figures,
    check,
    day_counts,
    drill_timing,
    scaled,
    seed_chats,
    settle,
    sweep_now,
)
from tests.support.procs import CONSUMING_S, Procs, timeout_for, wait_until, worker_consuming
from tests.support.world import World
from worker.config import Settings
from worker.deps import Deps

pytestmark = pytest.mark.drill

# Each drill's waits, in seconds; its pytest timeout is sized from the same numbers.
CHILD_KILLS = scaled(12, 100)
CHILD_KILL_S = 60.0 + 3 * CHILD_KILLS  # to find and kill every held share
CHILD_SETTLE_S = 120.0
ROUNDS = scaled(3, 20)
CLAIMED_S = 30.0  # claims to appear before the kill
_DRILL = drill_timing(Settings())
# A stranded chat-day is finished within lease + one sweep interval; the wait allows 30 s more.
RECOVERY_BOUND_S = _DRILL.lease_s + _DRILL.sweep_interval_s
ROUND_SETTLE_S = RECOVERY_BOUND_S + 30


@pytest.mark.timeout(timeout_for(CONSUMING_S, CHILD_KILL_S, CHILD_SETTLE_S))
def test_worker_child_killed_while_linq_holds_the_share(
    world: World, deps: Deps, procs: Procs, today: dt.date
) -> None:
    """SIGKILL the prefork child mid-call, over and over: 0 missed, duplicates explained."""
    from worker.queue.app import app

    n = CHILD_KILLS
    fig = Figures("worker child killed mid-share (prefork, SIGKILL)")
    line = world.line()
    chats = seed_chats(deps, world.sim, line, n)
    # Each chat's first share is held by Linq: half of them after Linq accepted it.
    world.sim.add_faults(
        [
            {"path": SHARE, "chat_id": str(c), "mode": "accept_then_hang", "hang_s": 30, "times": 1}
            if i % 2
            else {"path": SHARE, "chat_id": str(c), "mode": "pass", "latency_ms": 1000, "times": 1}
            for i, c in enumerate(chats)
        ]
    )
    worker = procs.worker(pool="prefork", concurrency=1)
    procs.beat()
    worker_consuming(app)
    sweep_now(deps)
    killed: dict[str, str] = {}
    deadline = time.monotonic() + CHILD_KILL_S
    while len(killed) < n and time.monotonic() < deadline:
        for held in world.sim.inflight():
            chat = held["chat_id"]
            if chat in killed or time.time() - held["since"] < 0.1:
                continue
            children = worker.children()
            if not children:
                break
            for child in children:
                child.kill()
            killed[chat] = held["phase"]
            break
        time.sleep(0.02)
    assert worker.alive, "the worker's main process must survive its children being killed"
    seconds = settle(deps, today, chats, timeout=CHILD_SETTLE_S, fig=fig)
    report = check(deps, world.sim, today)
    after_accept = sum(1 for phase in killed.values() if phase == "after_accept")
    fig.add(kills=len(killed), kills_after_accept=after_accept, settle_s=round(seconds, 1))
    fig.add_check(report)
    fig.write()
    assert len(killed) == n
    assert report.missed == []
    assert len(report.duplicates) <= after_accept
    assert all(d.explanation for d in report.duplicates)
    assert report.succeeded == n


@pytest.mark.timeout(timeout_for(*[CONSUMING_S, CLAIMED_S, ROUND_SETTLE_S] * ROUNDS))
def test_whole_worker_killed_mid_sweep_recovers_within_lease_plus_interval(
    world: World, deps: Deps, procs: Procs, today: dt.date
) -> None:
    """SIGKILL the worker's main process mid-sweep; a new worker finishes the stranded chat-days
    within lease + one sweep interval, not the broker's hour of visibility timeout."""
    from worker.queue.app import app

    rounds = ROUNDS
    per_round = 60
    fig = Figures("whole worker killed mid-sweep (threads, SIGKILL main)")
    line = world.line()
    world.sim.add_faults([{"path": SHARE, "mode": "pass", "latency_ms": 400}])
    procs.beat()
    s = deps.settings
    bound = s.lease_s + s.sweep_interval_s
    assert bound == RECOVERY_BOUND_S
    times: list[float] = []
    stranded: list[int] = []
    all_chats = []
    for _ in range(rounds):
        chats = seed_chats(deps, world.sim, line, per_round)
        all_chats.extend(chats)
        worker = procs.worker(pool="threads", concurrency=32)
        worker_consuming(app)
        sweep_now(deps)

        def claimed(c: list[uuid.UUID] = chats) -> bool:
            return day_counts(deps, today, c).get("claimed", 0) >= 10

        wait_until(claimed, CLAIMED_S, 0.02, "claims")
        worker.kill()
        killed_at = time.monotonic()
        counts = day_counts(deps, today, chats)
        stranded.append(per_round - counts.get("succeeded", 0))
        procs.worker(pool="threads", concurrency=32)
        settle(deps, today, chats, timeout=ROUND_SETTLE_S, fig=fig)
        times.append(time.monotonic() - killed_at)
    report = check(deps, world.sim, today)
    fig.add(
        rounds=rounds,
        stranded_total=sum(stranded),
        recovery_max_s=round(max(times), 1),
        recovery_mean_s=round(sum(times) / len(times), 1),
        bound_s=bound,
    )
    fig.add_check(report)
    fig.write()
    assert report.missed == []
    assert report.duplicates == []
    assert max(times) <= bound
    assert report.succeeded == rounds * per_round
