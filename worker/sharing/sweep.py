"""The sweep: refresh cards and lines, walk each line's due chats page by page in the line's
own day, mark them (queued now, or held until their slot or their hold's end), enqueue the
queued ones, and re-enqueue chat-days whose lease ended (`recover`) at its end.

Beat only triggers this; the share_days key decides. The sweep holds a PostgreSQL advisory
lock so two sweeps at once do not both walk the table, and marks each chat-day before
publishing it, so even a sweep that overlaps another enqueues each chat-day once. Held
chat-days are the release pass's (`release`): neither the sweep nor recovery re-publishes them.
"""

from __future__ import annotations

import datetime as dt
import logging
import time
import uuid
from collections.abc import Callable, Iterable
from functools import partial

from sqlalchemy import Engine
from sqlalchemy import exc as sa_exc

from worker.deps import Deps
from worker.errors import StoreUnavailable
from worker.keys import SWEEP_LOCK
from worker.linq import LinqCallError
from worker.logs import event
from worker.ops import metrics, retention
from worker.rules import retention as retention_rules
from worker.rules.cadence import close_from, day_bounds, share_day
from worker.rules.gate import LineState, hold_of
from worker.rules.states import DayStatus
from worker.sharing import recover
from worker.sharing.one_behind import OneBehind
from worker.sharing.passes import Publish, QueueDepth, SweepReport
from worker.sharing.plan import Batch, plan
from worker.store import partitions
from worker.store.cards import CardState, store_cards
from worker.store.lines import LineRow, lines, rearm_held, record_reputation
from worker.store.locks import advisory_lock
from worker.store.session import Sessions, transaction
from worker.store.sweeps import (
    close_past_days,
    due_page,
    fail_poisoned,
    finish_run,
    last_swept_day,
    mark,
    note_marked,
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


def refresh_cards(deps: Deps) -> int:
    """GET /v3/contact_card and cache which lines have an active card. Returns the active count."""
    cards = deps.client().list_cards()
    with transaction(deps.sessions) as s:
        return store_cards(
            s,
            [CardState(c.phone_number, c.first_name, c.last_name, c.image_url, c.is_active) for c in cards],
            complete=True,
        )


def refresh_lines(deps: Deps) -> int:
    """GET /v3/phone_numbers: each line's reputation as Linq rates it now (docs/decisions.md §10).
    A lifted hold needs nothing more here: the sweep re-arms the held chat-days of open lines."""
    numbers = deps.client().list_lines()
    now = deps.clock()
    with transaction(deps.sessions) as s:
        for n in numbers:
            if n.reputation is not None:
                record_reputation(s, n.phone_number, n.reputation, at=now, line_type=n.line_type)
    return len(numbers)


def load_lines(deps: Deps) -> list[LineRow]:
    with transaction(deps.sessions) as s:
        return lines(s, deps.settings.zone)


def run_sweep(
    deps: Deps,
    engine: Engine,
    publish: Publish,
    queue_depth: Callable[[], QueueDepth],
    *,
    queue_lease_s: float,
) -> SweepReport:
    """Full pass: cards and lines, past days, poison, every line's due chats, expired leases."""
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
            try:
                refresh_lines(deps)
            except LinqCallError as exc:
                # The last reputation read (or webhook) stands until the next one.
                event(log, "sweep.line_refresh_failed", logging.WARNING, error=exc.one_line())
                if exc.status == 401:
                    raise
            rows = load_lines(deps)
            days = {r.state.phone: r.state.today(now) for r in rows}
            marking = sorted(set(days.values()) | {day})
            _ensure_partitions(deps, marking)
            open_lines = [r.state.phone for r in rows if hold_of(r.state, now) is None]
            with transaction(deps.sessions) as s:
                since = close_from(last_swept_day(s))
                report.closed_past = close_past_days(s, line_days=days, since=since)
                report.poisoned = fail_poisoned(
                    s, days=days.values() or [day], max_lost_claims=deps.settings.max_lost_claims
                )
                # A hold that lifted without an event (or whose event was lost) lets go here.
                if open_lines:
                    report.rearmed = rearm_held(s, days=days.values(), lines=open_lines)
            with OneBehind() as tails:
                for row in rows:
                    if row.card_active:
                        line_day = days[row.state.phone]
                        _sweep_line(deps, row.state, line_day, now, publish, queue_lease_s, report, tails)
                report.enqueued += tails.drain()
            report.analyzed = _analyze_if_stale(deps, marking, report.enqueued + report.held)
            db = Sessions(deps.sessions)
            report.requeued = recover.requeue(
                db, deps.settings, days.values() or [day], publish, queue_depth, queue_lease_s
            )
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
        held=report.held,
        requeued=report.requeued,
        poisoned=report.poisoned,
        seconds=round(report.seconds, 3),
    )
    return report


def _sweep_line(
    deps: Deps,
    line: LineState,
    day: dt.date,
    now: dt.datetime,
    publish: Publish,
    queue_lease_s: float,
    report: SweepReport,
    tails: OneBehind,
) -> None:
    """One line's due chats, page by page: planned (queued now, or held until when), marked in
    one statement; the queued ones published, and all noted, while the next page is read."""
    after: tuple[dt.date, uuid.UUID] | None = None
    size = deps.settings.sweep_page_size
    day_start = day_bounds(day, line.zone)[0]
    while True:
        with transaction(deps.sessions) as s:
            page = due_page(
                s,
                line=line.phone,
                day=day,
                now=now,
                policy=deps.policy,
                after=after,
                limit=size,
                max_lost_claims=deps.settings.max_lost_claims,
            )
        report.scanned += page.scanned
        if page.markable:
            (marks,) = plan(
                [Batch(line, day, page.markable)],
                now=now,
                pace=deps.pace,
                pacer=deps.pacer,
                queue_lease_s=queue_lease_s,
            )
            with transaction(deps.sessions) as s:
                done = mark(
                    s,
                    day=day,
                    marks=marks,
                    max_lost_claims=deps.settings.max_lost_claims,
                    outbound=_on_day(page.last_outbound, day_start, now),
                )
            queued = [c for c, status in done if status == DayStatus.QUEUED]
            report.held += len(done) - len(queued)
            report.enqueued += tails.submit(partial(_page_tail, deps, publish, day, queued, page.markable))
        if page.last_key is None or page.scanned < size:
            return
        after = page.last_key


def _page_tail(
    deps: Deps, publish: Publish, day: dt.date, queued: list[uuid.UUID], markable: list[uuid.UUID]
) -> int:
    """A marked page's publish and note (on the OneBehind thread); how many it published."""
    sent = publish(queued, day) if queued else 0
    # Taken or not (another pass took it meanwhile), each has its row for the day now.
    with transaction(deps.sessions) as s:
        note_marked(s, day=day, chat_ids=markable)
    return sent


def _on_day(
    last: dict[uuid.UUID, dt.datetime | None], start: dt.datetime, now: dt.datetime
) -> dict[uuid.UUID, dt.datetime | None]:
    """The chats' last outbound times that fall on the day (docs/decisions.md §17: latency)."""
    return {c: t for c, t in last.items() if t is not None and start <= t <= now}


def _ensure_partitions(deps: Deps, days: Iterable[dt.date]) -> None:
    """The marked days' partitions and the next day's, in case beat's maintenance has not run
    (docs/retention.md). A failure here (a lock timeout) does not stop the sweep: the partitions
    made a week ahead are there, and the next pass tries again."""
    wanted = sorted({d for day in days for d in retention_rules.wanted_days(day, ahead=1)})
    try:
        retention.ensure_days(deps, wanted)
    except (StoreUnavailable, sa_exc.DBAPIError, RuntimeError) as exc:
        event(log, "sweep.partitions_failed", logging.WARNING, error=f"{type(exc).__name__}: {exc}"[:300])


def _analyze_if_stale(deps: Deps, days: Iterable[dt.date], marked: int) -> str | None:
    """ANALYZE the marked days' share_days partitions after a sweep marked much of them (see
    ANALYZE_AFTER_MARKED); returns the names of those it analyzed. (Lines in several zones mark
    up to three days; `marked` is their sum, so a day may be analyzed a little early.)"""
    if marked < ANALYZE_AFTER_MARKED:
        return None
    names: list[str] = []
    for day in days:
        with transaction(deps.sessions) as s:
            part = partitions.partition_of(s, partitions.SHARE_DAYS, day)
            if part is None or not stale_statistics(marked, partitions.rows_estimate(s, part.name)):
                continue
            started = time.monotonic()
            partitions.analyze(s, part.name)
        seconds = round(time.monotonic() - started, 3)
        event(log, "sweep.analyzed", partition=part.name, marked=marked, seconds=seconds)
        names.append(part.name)
    return ",".join(names) or None
