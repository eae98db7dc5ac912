"""The release pass (beat, every CARDSHARE_RELEASE_INTERVAL): held chat-days whose rest ended go
out, or rest again (docs/decisions.md §10-§11).

A held chat-day rests until its pace slot, until its hold lifts by itself (a pause's `until`,
the line's hours opening), or until the end of its day; an event that lifts a hold earlier
(resume, Linq clearing the line) re-arms it. When its rest ends, this pass re-checks the gate:
- its line is held now: it rests again, naming the hold;
- it was waiting for its pace slot: the slot has come, it is published;
- it was held for anything else and the line is open now: it gets a slot at the line's pace
  (so a resumed 100k-chat line does not flood Linq), and goes out when the slot comes.
Only this pass publishes held chat-days: the sweep and recovery leave them alone, so a held
line's chat-days are never re-published in a loop.
"""

from __future__ import annotations

import datetime as dt
import logging
import time
from collections import defaultdict

from sqlalchemy import Engine

from worker.deps import Deps
from worker.keys import RELEASE_LOCK
from worker.logs import event
from worker.ops import metrics
from worker.rules.cadence import share_day
from worker.rules.gate import HoldReason, LineState, hold_kind, hold_lease, hold_of
from worker.rules.states import DayStatus
from worker.sharing.passes import Publish, SweepReport, publish_by_day
from worker.sharing.plan import Batch, plan
from worker.sharing.sweep import load_lines
from worker.store.locks import advisory_lock
from worker.store.session import transaction
from worker.store.sweeps import Mark, Waking, apply_release, waking

log = logging.getLogger("cardshare.release")

PAGE = 1000


def run_release(deps: Deps, engine: Engine, publish: Publish, *, queue_lease_s: float) -> SweepReport:
    """One release pass over every line's today."""
    started = time.monotonic()
    now = deps.clock()
    report = SweepReport("release", share_day(now, deps.settings.zone))
    with advisory_lock(engine, RELEASE_LOCK) as got:
        if not got:
            report.ran = False
            metrics.sweep_finished("release", result="locked", seconds=0.0)
            return report
        try:
            rows = load_lines(deps)
            states = {r.state.phone: r.state for r in rows}
            days = {p: st.today(now) for p, st in states.items()}
            while True:
                with transaction(deps.sessions) as s:
                    woken = waking(s, line_days=days, limit=PAGE)
                    marks = _decide(deps, woken, states, now, queue_lease_s)
                    done = apply_release(s, marks)
                queued = [(c, d) for c, d, status in done if status == DayStatus.QUEUED]
                report.scanned += len(woken)
                report.held += len(done) - len(queued)
                report.enqueued += publish_by_day(publish, queued)
                if len(woken) < PAGE:
                    break
        except Exception:
            metrics.sweep_finished("release", result="error", seconds=time.monotonic() - started)
            raise
    report.seconds = time.monotonic() - started
    metrics.sweep_finished("release", result="ok", seconds=report.seconds, enqueued=report.enqueued)
    if report.scanned:
        event(
            log,
            "release.finished",
            woken=report.scanned,
            enqueued=report.enqueued,
            held=report.held,
            seconds=round(report.seconds, 3),
        )
    return report


def _decide(
    deps: Deps,
    woken: list[Waking],
    states: dict[str, LineState],
    now: dt.datetime,
    queue_lease_s: float,
) -> list[tuple[dt.date, Mark]]:
    by_line: dict[tuple[str, dt.date], list[Waking]] = defaultdict(list)
    for w in woken:
        by_line[(w.line_phone, w.day)].append(w)
    out: list[tuple[dt.date, Mark]] = []
    batches: list[Batch] = []
    for (phone, day), group in by_line.items():
        line = states[phone]
        held = hold_of(line, now)
        if held is not None:
            rest = (hold_lease(held, line, day, now) - now).total_seconds()
            out.extend((day, Mark(w.chat_id, DayStatus.HELD, held.text(), rest)) for w in group)
            continue
        slotted = [w for w in group if hold_kind(w.reason) == HoldReason.PACE.value]
        out.extend((day, Mark(w.chat_id, DayStatus.QUEUED, None, queue_lease_s)) for w in slotted)
        rest_of = [w.chat_id for w in group if hold_kind(w.reason) != HoldReason.PACE.value]
        if rest_of:
            batches.append(Batch(line, day, rest_of))
    planned = plan(batches, now=now, pace=deps.pace, pacer=deps.pacer, queue_lease_s=queue_lease_s)
    for batch, marks in zip(batches, planned, strict=True):
        out.extend((batch.day, m) for m in marks)
    return out
