"""The sweep: refresh cards, find due chats page by page, mark them queued, enqueue them.

Beat only triggers this; the share_days key decides. The sweep holds a PostgreSQL advisory
lock so two sweeps at once do not both walk the table, and marks each chat-day 'queued' before
publishing it, so even a sweep that overlaps another enqueues each chat-day once.
"""

from __future__ import annotations

import datetime as dt
import logging
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from sqlalchemy import Engine
from sqlalchemy import exc as sa_exc

from worker.deps import Deps
from worker.errors import StoreUnavailable
from worker.keys import RECOVER_LOCK, SWEEP_LOCK
from worker.linq import LinqCallError
from worker.logs import event
from worker.ops import metrics, retention
from worker.rules import retention as retention_rules
from worker.rules.cadence import share_day
from worker.store import partitions
from worker.store.cards import CardState, store_cards
from worker.store.session import transaction
from worker.store.sweeps import (
    KEYSET_START,
    advisory_lock,
    close_past_days,
    fail_poisoned,
    finish_run,
    mark_due_page,
    requeue_expired,
    start_run,
)

log = logging.getLogger("cardshare.sweep")

# A sweep that marked at least this many chat-days, and more than a tenth of what the planner
# believes today's partition holds, analyzes it: autoanalyze waits for 10 % of a table's rows
# (the legacy partition holds every day before partitioning) and its next round, and until then
# the share path's plans are made for a partition that looks empty. ANALYZE samples 30,000 rows
# whatever the size (~0.3 s for a day of 1M rows here, bench/README.md).
ANALYZE_AFTER_MARKED = 1000


def stale_statistics(marked: int, estimated_rows: int) -> bool:
    """Did this sweep change enough of the day's partition to leave its statistics behind?"""
    return marked >= ANALYZE_AFTER_MARKED and marked > estimated_rows // 10


Publish = Callable[[Sequence[uuid.UUID], dt.date], int]


@dataclass(frozen=True)
class QueueDepth:
    ready: int
    unacked: int

    @property
    def drained(self) -> bool:
        """Nothing waits in the queue. Unacked messages are ignored on purpose: a killed worker
        leaves its prefetched messages there for the whole visibility timeout (an hour), so
        waiting for them would strand their chat-days. A live worker's reserved message that
        gets re-queued as well is harmless: the second copy finds the chat-day claimed."""
        return self.ready == 0


@dataclass
class SweepReport:
    kind: str
    day: dt.date
    ran: bool = True
    scanned: int = 0
    enqueued: int = 0
    requeued: int = 0
    poisoned: int = 0
    closed_past: int = 0
    analyzed: str | None = None
    active_cards: int | None = None
    card_error: str | None = None
    seconds: float = 0.0
    notes: list[str] = field(default_factory=list)

    def one_line(self) -> str:
        if not self.ran:
            return f"{self.kind}: another {self.kind} is running; nothing done"
        parts = [
            f"{self.kind} {self.day}: scanned {self.scanned}",
            f"enqueued {self.enqueued}",
            f"re-enqueued {self.requeued}",
        ]
        if self.poisoned:
            parts.append(f"failed as poison {self.poisoned}")
        if self.card_error:
            parts.append(f"card refresh failed ({self.card_error})")
        return ", ".join(parts) + f" in {self.seconds:.1f}s"


def refresh_cards(deps: Deps) -> int:
    """GET /v3/contact_card and cache which lines have an active card. Returns the active count."""
    cards = deps.client().list_cards()
    with transaction(deps.sessions) as s:
        return store_cards(
            s,
            [CardState(c.phone_number, c.first_name, c.last_name, c.image_url, c.is_active) for c in cards],
            complete=True,
        )


def run_sweep(
    deps: Deps,
    engine: Engine,
    publish: Publish,
    queue_depth: Callable[[], QueueDepth],
    *,
    queue_lease_s: float,
) -> SweepReport:
    """Full pass: cards, past days, poison, every due chat, and expired leases."""
    started = time.monotonic()
    now = deps.clock()
    day = share_day(now, deps.settings.zone)
    report = SweepReport("sweep", day)
    with advisory_lock(engine, SWEEP_LOCK) as got:
        if not got:
            report.ran = False
            metrics.sweep_finished("sweep", result="locked", seconds=0.0)
            return report
        with transaction(deps.sessions) as s:
            run_id = start_run(s, "sweep", day)
        error: str | None = None
        try:
            try:
                report.active_cards = refresh_cards(deps)
            except LinqCallError as exc:
                # Sharing on yesterday's card cache beats not sharing; a 2012 still stops a line.
                report.card_error = exc.one_line()
                event(log, "sweep.card_refresh_failed", logging.WARNING, error=exc.one_line())
                if exc.status == 401:
                    raise
            _ensure_partitions(deps, day)
            with transaction(deps.sessions) as s:
                report.closed_past = close_past_days(s, before=day)
                report.poisoned = fail_poisoned(s, day=day, max_lost_claims=deps.settings.max_lost_claims)
            after: uuid.UUID | None = None
            while True:
                with transaction(deps.sessions) as s:
                    page = mark_due_page(
                        s,
                        day=day,
                        now=now,
                        policy=deps.policy,
                        after=after,
                        limit=deps.settings.sweep_page_size,
                        queue_lease_s=queue_lease_s,
                        max_lost_claims=deps.settings.max_lost_claims,
                    )
                report.scanned += page.scanned
                if page.queued:
                    report.enqueued += publish(page.queued, day)
                if page.last_id is None or page.scanned < deps.settings.sweep_page_size:
                    break
                after = page.last_id
            report.analyzed = _analyze_if_stale(deps, day, report.enqueued)
            report.requeued = _requeue(deps, day, publish, queue_depth, queue_lease_s)
        except Exception as exc:
            error = f"{type(exc).__name__}: {exc}"[:500]
            raise
        finally:
            report.seconds = time.monotonic() - started
            metrics.sweep_finished(
                "sweep",
                result="error" if error else "ok",
                seconds=report.seconds,
                scanned=report.scanned,
                enqueued=report.enqueued + report.requeued,
            )
            try:
                with transaction(deps.sessions) as s:
                    finish_run(
                        s,
                        run_id,
                        scanned=report.scanned,
                        enqueued=report.enqueued + report.requeued,
                        error=error,
                    )
            except StoreUnavailable:
                pass
    event(
        log,
        "sweep.finished",
        day=str(day),
        scanned=report.scanned,
        enqueued=report.enqueued,
        requeued=report.requeued,
        poisoned=report.poisoned,
        seconds=round(report.seconds, 3),
    )
    return report


def _ensure_partitions(deps: Deps, day: dt.date) -> None:
    """Today's and tomorrow's partitions, in case beat's maintenance has not run (docs/retention.md).
    A failure here (a lock timeout) does not stop the sweep: the partitions made a week ahead are
    there, and the next pass tries again."""
    try:
        retention.ensure_days(deps, retention_rules.wanted_days(day, ahead=1))
    except (StoreUnavailable, sa_exc.DBAPIError, RuntimeError) as exc:
        event(log, "sweep.partitions_failed", logging.WARNING, error=f"{type(exc).__name__}: {exc}"[:300])


def _analyze_if_stale(deps: Deps, day: dt.date, marked: int) -> str | None:
    """ANALYZE today's share_days partition after a sweep marked much of it (see
    ANALYZE_AFTER_MARKED); returns its name when it did."""
    if marked < ANALYZE_AFTER_MARKED:
        return None
    with transaction(deps.sessions) as s:
        part = partitions.partition_of(s, partitions.SHARE_DAYS, day)
        if part is None or not stale_statistics(marked, partitions.rows_estimate(s, part.name)):
            return None
        started = time.monotonic()
        partitions.analyze(s, part.name)
    seconds = round(time.monotonic() - started, 3)
    event(log, "sweep.analyzed", partition=part.name, marked=marked, seconds=seconds)
    return part.name


def run_recover(
    deps: Deps,
    engine: Engine,
    publish: Publish,
    queue_depth: Callable[[], QueueDepth],
    *,
    queue_lease_s: float,
) -> SweepReport:
    """The minute pass: re-enqueue chat-days whose lease ended, inside Linq's 5-minute window."""
    started = time.monotonic()
    day = share_day(deps.clock(), deps.settings.zone)
    report = SweepReport("recover", day)
    with advisory_lock(engine, RECOVER_LOCK) as got:
        if not got:
            report.ran = False
            metrics.sweep_finished("recover", result="locked", seconds=0.0)
            return report
        try:
            with transaction(deps.sessions) as s:
                report.poisoned = fail_poisoned(s, day=day, max_lost_claims=deps.settings.max_lost_claims)
            report.requeued = _requeue(deps, day, publish, queue_depth, queue_lease_s)
        except Exception:
            metrics.sweep_finished("recover", result="error", seconds=time.monotonic() - started)
            raise
    report.seconds = time.monotonic() - started
    metrics.sweep_finished("recover", result="ok", seconds=report.seconds, enqueued=report.requeued)
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


def _requeue(
    deps: Deps, day: dt.date, publish: Publish, queue_depth: Callable[[], QueueDepth], queue_lease_s: float
) -> int:
    drained = queue_depth().drained
    total = 0
    after = KEYSET_START
    while True:
        with transaction(deps.sessions) as s:
            page = requeue_expired(
                s,
                day=day,
                limit=deps.settings.sweep_page_size,
                queue_lease_s=queue_lease_s,
                queue_drained=drained,
                stale_queued_s=deps.settings.lease_s,
                max_lost_claims=deps.settings.max_lost_claims,
                after=after,
            )
        if not page.chat_ids or page.last is None:
            return total
        total += publish(page.chat_ids, day)
        if len(page.chat_ids) < deps.settings.sweep_page_size:
            return total
        after = page.last
