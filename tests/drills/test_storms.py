"""Drill 7: Linq storms. Retries never undercut Retry-After, stay within 4 attempts and the
budget, are jittered, and the day completes once Linq recovers."""

from __future__ import annotations

import datetime as dt
import itertools
import statistics
import time
from typing import Any, cast

import pytest

from tests.support.drills import (
    SHARE,
    Figures,
    attempts_of,
    check,
    iter_runs,
    scaled,
    seed_chats,
    settle,
    sweep_now,
)
from tests.support.procs import CONSUMING_S, Procs, timeout_for, worker_consuming
from tests.support.world import World
from worker.deps import Deps
from worker.simulator.client import FaultSpec

pytestmark = pytest.mark.drill

# Each storm's waits, in seconds; its pytest timeout is sized from the same numbers.
SETTLE_S = 180.0
STORM_503_S = float(scaled(20, 120))
STORM_429_S = 5.0
STORM_500_S = float(scaled(15, 120))


def retry_figures(attempts: list[dict[str, Any]], budget: float) -> dict[str, Any]:
    """Per run (claim): attempts, span, gaps between tries, Retry-After violations."""
    per_run: list[int] = []
    spans: list[float] = []
    gaps: list[float] = []
    violations = 0
    by_chat: dict[Any, list[dict[str, Any]]] = {}
    for a in attempts:
        by_chat.setdefault(a["chat_id"], []).append(a)
    for run in iter_runs(attempts):
        per_run.append(len(run))
        spans.append((run[-1]["started_at"] - run[0]["started_at"]).total_seconds())
        for prev, nxt in itertools.pairwise(run):
            if prev["finished_at"] is not None:
                gaps.append((nxt["started_at"] - prev["finished_at"]).total_seconds())
    # Retry-After is checked across runs too: the next try of the chat, whoever makes it.
    for chat_attempts in by_chat.values():
        for prev, nxt in itertools.pairwise(chat_attempts):
            wait = prev["retry_after_s"]
            done = prev["finished_at"]
            waited = (nxt["started_at"] - done).total_seconds() if done else None
            if wait and waited is not None and waited < wait - 0.05:
                violations += 1
    return {
        "runs": len(per_run),
        "max_attempts_per_run": max(per_run) if per_run else 0,
        "max_run_span_s": round(max(spans), 2) if spans else 0.0,
        "gap_stdev_s": round(statistics.pstdev(gaps), 3) if len(gaps) > 1 else 0.0,
        "distinct_gaps": len({round(g, 3) for g in gaps}),
        "retry_after_violations": violations,
        "budget_s": budget,
    }


def storm(
    world: World,
    deps: Deps,
    procs: Procs,
    today: dt.date,
    rule: dict[str, Any],
    seconds: float,
    name: str,
    n: int = 60,
) -> tuple[dict[str, Any], Any]:
    from worker.queue.app import app

    fig = Figures(name)
    line = world.line()
    chats = seed_chats(deps, world.sim, line, n)
    world.sim.add_faults([cast("FaultSpec", rule)])
    procs.worker(concurrency=32)
    procs.beat()
    worker_consuming(app)
    started = time.monotonic()
    sweep_now(deps)
    time.sleep(seconds)
    world.sim.clear_faults()
    recovered = time.monotonic()
    settle(deps, today, chats, timeout=SETTLE_S, fig=fig)
    done = time.monotonic()
    figs = retry_figures(attempts_of(deps, today), deps.settings.retry_budget_s)
    figs.update(
        chats=n,
        storm_s=seconds,
        completed_after_recovery_s=round(done - recovered, 1),
        total_s=round(done - started, 1),
    )
    report = check(deps, world.sim, today)
    fig.add(**figs)
    fig.add_check(report)
    fig.write()
    return figs, report


def assert_disciplined(figs: dict[str, Any], report: Any, budget: float, read_timeout: float) -> None:
    assert figs["retry_after_violations"] == 0
    assert figs["max_attempts_per_run"] <= 4
    # A run's retries start within the budget (the last try may then take a read timeout).
    assert figs["max_run_span_s"] <= budget + read_timeout
    assert figs["distinct_gaps"] > 1
    assert figs["gap_stdev_s"] > 0
    assert report.missed == []
    assert report.duplicates == []


@pytest.mark.timeout(timeout_for(CONSUMING_S, STORM_503_S, SETTLE_S))
def test_503_for_every_call(world: World, deps: Deps, procs: Procs, today: dt.date) -> None:
    rule = {"path": SHARE, "mode": "respond", "status": 503, "code": 3006}
    figs, report = storm(world, deps, procs, today, rule, STORM_503_S, "Linq storm: 503 on every call")
    assert_disciplined(figs, report, deps.settings.retry_budget_s, deps.settings.http_read_timeout_s)
    assert report.succeeded == figs["chats"]


@pytest.mark.timeout(timeout_for(CONSUMING_S, STORM_429_S, SETTLE_S))
def test_429_with_retry_after_30(world: World, deps: Deps, procs: Procs, today: dt.date) -> None:
    rule = {"path": SHARE, "mode": "respond", "status": 429, "code": 1007, "retry_after": 30}
    figs, report = storm(world, deps, procs, today, rule, STORM_429_S, "Linq storm: 429 with Retry-After 30")
    assert figs["retry_after_violations"] == 0
    assert figs["max_attempts_per_run"] <= 4
    assert report.missed == []
    assert report.duplicates == []
    assert report.succeeded == figs["chats"]


@pytest.mark.timeout(timeout_for(CONSUMING_S, STORM_500_S, SETTLE_S))
def test_500_3006_half_the_time(world: World, deps: Deps, procs: Procs, today: dt.date) -> None:
    rule = {"path": SHARE, "mode": "respond", "status": 500, "code": 3006, "probability": 0.5}
    figs, report = storm(
        world, deps, procs, today, rule, STORM_500_S, "Linq storm: 500/3006 half the time", n=120
    )
    assert_disciplined(figs, report, deps.settings.retry_budget_s, deps.settings.http_read_timeout_s)
    assert report.succeeded == figs["chats"]
