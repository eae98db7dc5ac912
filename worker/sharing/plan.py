"""What a pass does with due chat-days now: publish, or hold until when (docs/decisions.md §10-§11).

One function for every path that marks chat-days (the sweep, the release pass, and later the
event path): a held line's chat-days rest until the hold lifts; an open line's get slots spread
at its pace from its schedule in Redis, and only those whose slot comes before the next release
pass are published now. The cap itself is enforced at call time (`share`), not here.
"""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Sequence
from dataclasses import dataclass

from worker.deps import Pacer
from worker.rules.gate import (
    HoldReason,
    LineState,
    PacePolicy,
    hold_lease,
    hold_of,
    line_cap,
    spacing_s,
)
from worker.rules.states import DayStatus
from worker.store.sweeps import Mark


@dataclass(frozen=True)
class Batch:
    """Chat-days of one line on its day, for the plan."""

    line: LineState
    day: dt.date
    chat_ids: Sequence[uuid.UUID]


def pace_reason(cap: int) -> str:
    return f"{HoldReason.PACE.value}: waiting for its slot at the line's pace ({cap}/min)"


def plan(
    batches: Sequence[Batch],
    *,
    now: dt.datetime,
    pace: PacePolicy,
    pacer: Pacer | None,
    queue_lease_s: float,
) -> list[list[Mark]]:
    """The marks for each batch, in order: queued (publish now) or held (and until when).

    One Redis call for every line that needs slots. A pacer-less caller (nothing paced) gets
    every open line's chat-days queued.
    """
    out: list[list[Mark]] = [[] for _ in batches]
    wants: list[tuple[int, int, float]] = []  # (batch index, cap, spacing)
    for i, b in enumerate(batches):
        held = hold_of(b.line, now)
        if held is not None:
            rest = (hold_lease(held, b.line, b.day, now) - now).total_seconds()
            out[i] = [Mark(c, DayStatus.HELD, held.text(), rest) for c in b.chat_ids]
            continue
        cap = line_cap(b.line, pace)
        spacing = spacing_s(cap, pace)
        if cap is None or pacer is None or not b.chat_ids:
            out[i] = [Mark(c, DayStatus.QUEUED, None, queue_lease_s) for c in b.chat_ids]
            continue
        wants.append((i, cap, spacing))
    if wants:
        assert pacer is not None
        starts = pacer.reserve(
            [(batches[i].line.phone, len(batches[i].chat_ids), spacing) for i, _, spacing in wants]
        ).starts_in_s
        for i, cap, spacing in wants:
            b = batches[i]
            first = starts[b.line.phone]
            marks = []
            for k, chat in enumerate(b.chat_ids):
                wait = first + k * spacing
                if wait <= pace.release_interval_s:
                    marks.append(Mark(chat, DayStatus.QUEUED, None, queue_lease_s))
                else:
                    marks.append(Mark(chat, DayStatus.HELD, pace_reason(cap), wait))
            out[i] = marks
    return out
