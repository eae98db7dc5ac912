"""The checker finds missed and duplicated chat-days, and explains them from the audit rows."""

from __future__ import annotations

import datetime as dt

import pytest
from sqlalchemy import text

from tests.support.world import World
from worker.deps import Deps
from worker.linq import LinqGateway
from worker.ops.check import explain, possible_duplicate, run_check
from worker.sharing.share import Outcome, share_chat
from worker.store.session import transaction


def test_check_counts_missed_and_exact_duplicates(world: World, deps: Deps, today: dt.date) -> None:
    world.line()
    shared, open_, unseen, dup = (world.chat() for _ in range(4))
    assert share_chat(shared, today, deps).outcome is Outcome.SHARED
    with transaction(deps.sessions) as s:
        s.execute(
            text(
                "INSERT INTO share_days (chat_id, day, status, lease_until) VALUES (:c, :d, 'retry', now())"
            ),
            {"c": open_, "d": today},
        )
    assert share_chat(dup, today, deps).outcome is Outcome.SHARED
    # A second accepted share for `dup` that cardshare did not make (after the window).
    world.sim.configure(share_window_s=0.001)
    gw = LinqGateway.create(deps.settings)
    try:
        gw.share_contact_card(str(dup))
    finally:
        gw.close()
    now = dt.datetime.now(dt.UTC)
    with deps.sessions() as s:
        report = run_check(s, today, deps.policy, now=now, share_events=world.sim.share_events())
    assert report.succeeded == 2
    assert sorted(report.missed) == sorted([open_, unseen])
    assert report.unseen_due == [unseen]
    assert [d.chat_id for d in report.duplicates] == [dup]
    assert report.duplicates[0].accepted == 2
    assert "outside cardshare" in report.duplicates[0].explanation
    assert not report.ok
    # Without the simulator's log, our own attempts show no duplicate for `dup` (one 2xx).
    with deps.sessions() as s:
        assert run_check(s, today, deps.policy, now=now).duplicates == []


def t(seconds: float) -> str:
    return (dt.datetime(2026, 3, 2, 12, tzinfo=dt.UTC) + dt.timedelta(seconds=seconds)).isoformat()


@pytest.mark.parametrize(
    ("attempts", "expected"),
    [
        ([{"started_at": t(0), "outcome": "ok", "http_status": 204}], False),
        (
            [
                {"started_at": t(0), "outcome": "ok", "http_status": 204},
                {"started_at": t(400), "outcome": "ok", "http_status": 204},
            ],
            True,
        ),
        # Unknown then 2xx inside the window: the first was not accepted (else 429).
        (
            [
                {"started_at": t(0), "outcome": "unknown", "http_status": None},
                {"started_at": t(20), "outcome": "ok", "http_status": 204},
            ],
            False,
        ),
        (
            [
                {"started_at": t(0), "outcome": None, "http_status": None},
                {"started_at": t(301), "outcome": "ok", "http_status": 204},
            ],
            True,
        ),
        (
            [
                {"started_at": t(0), "outcome": "unknown", "http_status": None},
                {"started_at": t(20), "outcome": "ok", "http_status": 429},
            ],
            False,
        ),
    ],
)
def test_possible_duplicate_from_attempts(attempts: list[dict[str, object]], expected: bool) -> None:
    assert possible_duplicate(attempts) is expected
    assert explain(attempts)
