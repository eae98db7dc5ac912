"""Beat's count pass saves today's counts; `status` reads them while they are fresh and were
counted for the same lines and days, and counts itself otherwise; what it saved equals a
recount (worker/ops/day_counts.py, worker/ops/count_pass.py)."""

from __future__ import annotations

import datetime as dt
import json
import uuid
from typing import Any

from sqlalchemy import text

from tests.support.cli import cardshare
from tests.support.world import World
from worker.config import Settings
from worker.deps import Deps
from worker.ops import count_pass
from worker.ops import status as status_mod
from worker.ops.status import Status
from worker.sharing.share import Outcome, share_chat
from worker.store.session import transaction

A, B = "+12223334444", "+12223335555"


def collect(deps: Deps, *, max_age: float, now: dt.datetime | None = None) -> Status:
    return status_mod.collect(
        deps.sessions,
        day=None,
        now=now or dt.datetime.now(dt.UTC),
        policy=deps.policy,
        redis_url=None,
        stall_s=60.0,
        summary_max_age_s=max_age,
    )


def numbers(st: Status) -> dict[str, Any]:
    """What the count pass stands in for: the counts per line and in total, and the latency."""
    d = st.as_dict()
    return {
        "day": d["day"],
        "total": d["total"],
        "lines": [{k: v for k, v in ln.items() if k != "state"} for ln in d["lines"]],
        "first_outbound_to_share": d["first_outbound_to_share"],
    }


def put_day(
    deps: Deps, chat: uuid.UUID, day: dt.date, status: str, reason: str | None = None, **extra: Any
) -> None:
    cols = {"chat_id": chat, "day": day, "status": status, "reason": reason, **extra}
    names = ", ".join(cols)
    binds = ", ".join(f":{k}" for k in cols)
    with transaction(deps.sessions) as s:
        s.execute(
            text(
                f"INSERT INTO share_days ({names}, lease_until) VALUES ({binds}, now() + interval '1 hour')"
            ),
            cols,
        )


def a_varied_day(world: World, deps: Deps, today: dt.date) -> None:
    """Two lines, chat-days in every kind of state, a due chat no pass reached, latency."""
    world.line(A)
    world.line(B)
    for _ in range(3):
        assert share_chat(world.chat(A), today, deps).outcome is Outcome.SHARED
    now = dt.datetime.now(dt.UTC)
    for seconds in (1.0, 2.0, 30.0):
        put_day(
            deps,
            world.chat(B),
            today,
            "succeeded",
            outbound_at=now - dt.timedelta(seconds=seconds + 5),
            finished_at=now - dt.timedelta(seconds=5),
        )
    put_day(deps, world.chat(B), today, "succeeded", confirmed_by_rate_limit=True)
    put_day(deps, world.chat(A), today, "skipped", "card_inactive: the line's card is inactive")
    put_day(deps, world.chat(A), today, "failed", "permanent: HTTP 400 code 1001")
    put_day(deps, world.chat(B), today, "held", "line_paused: paused by ops@test")
    put_day(deps, world.chat(B), today, "queued")
    put_day(deps, world.chat(A), today, "retry", "transient: HTTP 503")
    world.chat(A)  # due, not marked by any pass: "not enqueued"
    world.chat(B)


def test_saved_counts_equal_a_recount(world: World, deps: Deps, today: dt.date) -> None:
    a_varied_day(world, deps, today)
    report = count_pass.count_today(deps)
    assert (report.lines, report.chat_days) == (2, 12)
    saved = collect(deps, max_age=90.0)
    live = collect(deps, max_age=0.0)
    assert live.counted_at is None
    assert saved.counted_at is not None
    assert saved.counted_at < saved.at
    assert numbers(saved) == numbers(live)
    # And the recount is the day as built, not two empty answers that agree.
    t = live.total
    assert (t.shared, t.confirmed_by_rate_limit, t.not_enqueued, t.queued, t.retry) == (7, 1, 2, 1, 1)
    assert (t.skipped, t.failed, t.held) == ({"card_inactive": 1}, {"permanent": 1}, {"line_paused": 1})
    [lat] = live.first_outbound
    assert (lat.day, lat.shares, lat.p50_s) == (today, 3, 2.0)


def test_status_reads_the_saved_counts_only_while_they_fit(world: World, deps: Deps, today: dt.date) -> None:
    world.line(A)
    first, second = world.chat(A), world.chat(A)
    assert share_chat(first, today, deps).outcome is Outcome.SHARED
    assert collect(deps, max_age=90.0).counted_at is None  # nothing saved yet: counted now
    count_pass.count_today(deps)
    assert share_chat(second, today, deps).outcome is Outcome.SHARED
    # Fresh: the saved numbers, said to be as of the pass, even though a share happened since.
    st = collect(deps, max_age=90.0)
    assert (st.total.shared, st.total.not_enqueued) == (1, 1)
    assert st.counted_at is not None
    assert st.as_dict()["counted_at"] == st.counted_at.isoformat()
    # Live (`status --live`, or the summary off): counted now.
    assert collect(deps, max_age=0.0).total.shared == 2
    # Older than the max age (beat stopped): counted now.
    later = dt.datetime.now(dt.UTC) + dt.timedelta(seconds=91)
    st = collect(deps, max_age=90.0, now=later)
    assert (st.total.shared, st.counted_at) == (2, None)
    # Another line since the pass: the saved row is not for these lines, so counted now.
    world.line(B)
    world.chat(B)
    st = collect(deps, max_age=90.0)
    assert (st.total.shared, st.total.not_enqueued, st.counted_at) == (2, 1, None)
    # The next pass covers it.
    count_pass.count_today(deps)
    st = collect(deps, max_age=90.0)
    assert (st.total.shared, st.total.not_enqueued) == (2, 1)
    assert st.counted_at is not None


def test_a_past_day_is_always_counted(world: World, deps: Deps, today: dt.date) -> None:
    world.line(A)
    chat = world.chat(A)
    put_day(deps, chat, today - dt.timedelta(days=1), "succeeded")
    count_pass.count_today(deps)
    st = status_mod.collect(
        deps.sessions,
        day=today - dt.timedelta(days=1),
        now=dt.datetime.now(dt.UTC),
        policy=deps.policy,
        redis_url=None,
        stall_s=60.0,
        summary_max_age_s=90.0,
    )
    assert (st.total.shared, st.counted_at) == (1, None)


def test_count_and_status_through_the_cli(
    world: World, deps: Deps, settings: Settings, today: dt.date
) -> None:
    world.line(A)
    first, second = world.chat(A), world.chat(A)
    assert share_chat(first, today, deps).outcome is Outcome.SHARED
    counted = cardshare(settings, "count")
    assert counted.returncode == 0, counted.stderr
    assert counted.stdout.strip().startswith("counted 1 chat-days of 1 lines in ")
    assert share_chat(second, today, deps).outcome is Outcome.SHARED
    out = cardshare(settings, "status")
    assert out.returncode == 0, out.stderr
    assert "chat-day counts as of " in out.stdout
    assert "`cardshare status --live` counts now" in out.stdout
    doc = json.loads(cardshare(settings, "status", "--json").stdout)
    assert doc["total"]["shared"] == 1
    assert "counted_at" in doc
    live = json.loads(cardshare(settings, "status", "--json", "--live").stdout)
    assert live["total"]["shared"] == 2
    assert "counted_at" not in live
    assert "chat-day counts as of" not in cardshare(settings, "status", "--live").stdout
    # The summary off: every status counts.
    off = json.loads(cardshare(settings, "status", "--json", CARDSHARE_STATUS_COUNTS_INTERVAL="0").stdout)
    assert off["total"]["shared"] == 2


def test_beat_counts_on_the_control_queue_unless_off() -> None:
    import worker.queue.tasks  # noqa: F401 - registers the tasks
    from worker.queue.app import app, celery_config

    assert "cardshare.count" in app.tasks
    entry = celery_config(Settings(status_counts_interval_s=45.0))["beat_schedule"]["count"]
    assert entry["task"] == "cardshare.count"
    assert entry["schedule"] == dt.timedelta(seconds=45)
    assert entry["options"]["queue"] == "cardshare.control"
    assert "count" not in celery_config(Settings(status_counts_interval_s=0.0))["beat_schedule"]
