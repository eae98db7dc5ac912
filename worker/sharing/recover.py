"""Recovery: re-enqueue chat-days whose lease ended (a crash, a lost message, a retry due), and
end those whose holder died too often (poison). Beat runs it every minute; the sweep runs the
re-queue at its end too.

The pass runs on a `store.sql.Database`, not on Deps: beat gives it SQLAlchemy's sessions,
`cardshare recover` one psycopg connection (`store.plain`), and publishes through Celery only
when there is something to publish, so a pass that finds nothing starts and ends without
SQLAlchemy or Celery (bench/README.md §6).
"""

from __future__ import annotations

import datetime as dt
import logging
import time
from collections.abc import Callable, Iterable

from worker.config import Settings
from worker.keys import RECOVER_LOCK
from worker.logs import event
from worker.rules.cadence import share_day
from worker.sharing.passes import Publish, QueueDepth, SweepReport
from worker.store.lines import lines
from worker.store.sql import Database
from worker.store.sweeps import KEYSET_START, fail_poisoned, requeue_expired

log = logging.getLogger("cardshare.sweep")


def run_recover(
    db: Database,
    settings: Settings,
    now: dt.datetime,
    publish: Publish,
    queue_depth: Callable[[], QueueDepth],
    *,
    queue_lease_s: float,
) -> SweepReport:
    """The minute pass: re-enqueue chat-days whose lease ended, inside Linq's 5-minute window.
    `report.ran` is False when another recovery holds the lock."""
    started = time.monotonic()
    day = share_day(now, settings.zone)
    report = SweepReport("recover", day)
    with db.advisory_lock(RECOVER_LOCK) as got:
        if not got:
            report.ran = False
            return report
        with db.transaction() as s:
            days = {r.state.today(now) for r in lines(s, settings.zone)} or {day}
        with db.transaction() as s:
            report.poisoned = fail_poisoned(s, days=days, max_lost_claims=settings.max_lost_claims)
        report.requeued = requeue(db, settings, days, publish, queue_depth, queue_lease_s)
    report.seconds = time.monotonic() - started
    if report.requeued or report.poisoned:
        event(
            log,
            "recover.finished",
            day=str(day),
            requeued=report.requeued,
            poisoned=report.poisoned,
            seconds=round(report.seconds, 3),
        )
    return report


def requeue(
    db: Database,
    settings: Settings,
    days: Iterable[dt.date],
    publish: Publish,
    queue_depth: Callable[[], QueueDepth],
    queue_lease_s: float,
) -> int:
    """Re-queue each of the lines' days (one to three: lines in different zones), a day at a
    time so each statement opens only that day's partition; publish each page after its commit."""
    drained = queue_depth().drained
    total = 0
    for day in sorted(set(days)):
        after = KEYSET_START
        while True:
            with db.transaction() as s:
                page = requeue_expired(
                    s,
                    day=day,
                    limit=settings.sweep_page_size,
                    queue_lease_s=queue_lease_s,
                    queue_drained=drained,
                    stale_queued_s=settings.lease_s,
                    max_lost_claims=settings.max_lost_claims,
                    after=after,
                )
            if not page.chat_ids or page.last is None:
                break
            total += publish(page.chat_ids, day)
            if len(page.chat_ids) < settings.sweep_page_size:
                break
            after = page.last
    return total
