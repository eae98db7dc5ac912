"""Beat's count pass: today's chat-day counts and first-outbound latency for every line, counted
once and saved for `cardshare status` and the status page (`ops.day_counts` reads them back)."""

from __future__ import annotations

import time
from dataclasses import dataclass

from worker.deps import Deps
from worker.ops.day_counts import encode, read_day_counts
from worker.store.latency import first_outbound_latency
from worker.store.lines import lines
from worker.store.session import read_only, transaction
from worker.store.summaries import save_summary


@dataclass(frozen=True)
class CountReport:
    lines: int
    chat_days: int
    seconds: float

    def one_line(self) -> str:
        return f"counted {self.chat_days} chat-days of {self.lines} lines in {self.seconds:.2f}s"


def count_today(deps: Deps) -> CountReport:
    """Beat's count pass: today's counts and first-outbound latency for every line, saved.

    The counting is read only; the save is one upsert in its own short transaction."""
    now = deps.clock()
    started = time.monotonic()
    with read_only(deps.sessions) as s:
        current = {r.state.phone: r.state.today(now) for r in lines(s, deps.policy.zone)}
        counts = read_day_counts(s, current, current, now, deps.policy)
        latency = first_outbound_latency(s, current.values())
    seconds = time.monotonic() - started
    with transaction(deps.sessions) as s:
        save_summary(s, encode(current, counts, latency, now, seconds))
    return CountReport(len(current), sum(r.count for r in counts[0]), seconds)
