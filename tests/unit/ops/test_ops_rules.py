"""Pure parts of operations: when a worker counts as stalled, beat as gone, and the page's escaping."""

from __future__ import annotations

import datetime as dt
import uuid

import pytest

from worker.ops.health import BeatRecord, WorkerRecord, assess_beat, assess_worker, heartbeat_interval
from worker.ops.status import Counts, Status
from worker.ops.status_page import render
from worker.store.reports import DayCount, FailureRow

NOW = 1_000_000.0


def record(*, progress_ago: float, held: int = 0, heartbeat_ago: float = 1.0) -> WorkerRecord:
    return WorkerRecord(
        node="w@h",
        host="h",
        pid=1,
        pool="thread",
        concurrency=8,
        started_at=NOW - 7200,
        heartbeat_at=NOW - heartbeat_ago,
        progress_at=NOW - progress_ago,
        last_task_at=NOW - progress_ago,
        completed=10,
        reserved=held,
        interval_s=5.0,
    )


@pytest.mark.parametrize(
    ("progress_ago", "ready", "held", "ok"),
    [
        (10, 0, 0, True),  # just worked
        (3600, 0, 0, True),  # idle for an hour with nothing to do
        (299, 50, 0, True),  # busy queue, progress inside the limit
        (301, 50, 0, False),  # messages wait, nothing finished for longer than the limit
        (301, 0, 3, False),  # the queue is empty but this worker sits on 3 messages
        (301, 0, 0, True),  # frozen with nothing waiting: not (yet) a stall
    ],
)
def test_stalled_means_work_waits_and_nothing_finishes(
    progress_ago: float, ready: int, held: int, ok: bool
) -> None:
    verdict = assess_worker(record(progress_ago=progress_ago, held=held), ready=ready, now=NOW, stall_s=300)
    assert verdict.ok is ok
    assert verdict.line.startswith("w@h: ok" if ok else "w@h: stalled")
    assert "\n" not in verdict.line


def test_heartbeat_interval_fits_the_stall_limit() -> None:
    assert heartbeat_interval(300) == 5.0
    assert heartbeat_interval(6) == 1.5
    assert heartbeat_interval(0.1) == 0.2


def test_beat_is_gone_after_four_missed_heartbeats() -> None:
    beat = BeatRecord("h", 7, NOW - 100, NOW - 19, 5.0, {"cardshare.sweep": NOW - 60})
    assert assess_beat(beat, now=NOW).ok
    assert "sweep sent 60s ago" in assess_beat(beat, now=NOW).line
    assert not assess_beat(beat, now=NOW + 2).ok
    assert not assess_beat(None, now=NOW).ok


def test_counts_add_up_per_status_and_reason_kind() -> None:
    c = Counts()
    for status, kind, n in [
        ("succeeded", None, 3),
        ("skipped", "card_inactive", 2),
        ("skipped", None, 1),
        ("failed", "poison", 1),
        ("queued", None, 4),
        ("retry", "retry", 2),
        ("unknown", "read", 1),
    ]:
        c.add(DayCount("+12223334444", status, kind, n, 1 if status == "succeeded" else 0))
    assert (c.due, c.shared, c.confirmed_by_rate_limit, c.in_flight, c.unknown) == (14, 3, 1, 6, 1)
    assert dict(c.skipped) == {"card_inactive": 2, "unstated": 1}
    assert c.failed_total == 1


def test_the_page_escapes_what_it_shows() -> None:
    hostile = "<script>alert(1)</script>"
    counts = Counts()
    counts.add(DayCount("+12223334444", "failed", "permanent", 1, 0))
    at = dt.datetime(2026, 3, 2, 12, tzinfo=dt.UTC)
    status = Status(
        day=at.date(),
        at=at,
        lines=[],
        total=counts,
        last_sweep=None,
        broker_error=hostile,
        failures=[
            FailureRow(uuid.uuid4(), at.date(), "+12223334444", "failed", hostile, at, 400, 1002, "t1")
        ],
    )
    page = render(status)
    assert hostile not in page
    assert "&lt;script&gt;" in page
    assert 'data-field="failed" data-line="total">1<' in page
    assert "no sweep has run yet" in page
