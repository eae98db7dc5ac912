"""Each line as an operator reads it: Linq's view (reputation, status), the controls (pause,
zone, hours, pace), the hold it is under now, its pace, and whether today's remaining due
chat-days fit before its day (or its hours) end. Shared by `cardshare line list`, `status`
and the status page; plain data, no I/O beyond what the callers pass in."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any

from worker.rules.gate import (
    Estimate,
    LineState,
    PacePolicy,
    estimate,
    hold_of,
    line_cap,
    scheduled_per_minute,
)
from worker.store.lines import LineRow


@dataclass(frozen=True)
class LinePace:
    """The line's pace now, from Redis: calls granted within the log's span, and how far ahead its
    schedule is booked (None when Redis could not be read)."""

    granted_last_minute: int
    booked_ahead_s: float


@dataclass(frozen=True)
class LineView:
    phone: str
    day: dt.date
    zone: str
    zone_is_default: bool
    card_active: bool
    reputation: str | None
    linq_status: str | None
    paused: str | None  # the line's own pause, described
    account_paused: str | None
    hours: str | None
    cap: int | None  # shares per rolling minute now (None: no cap)
    cap_source: str  # "line", "default", "at_risk", "none"
    scheduled_per_minute: float | None
    held: str | None  # the hold on the line now, in words
    remaining: int
    estimate: Estimate
    pace: LinePace | None = None

    def as_dict(self) -> dict[str, Any]:
        e = self.estimate
        return {
            "line": self.phone,
            "day": self.day.isoformat(),
            "timezone": self.zone,
            "timezone_is_default": self.zone_is_default,
            "card_active": self.card_active,
            "reputation": self.reputation,
            "linq_status": self.linq_status,
            "paused": self.paused,
            "account_paused": self.account_paused,
            "hours": self.hours,
            "pace_per_minute": self.cap,
            "pace_source": self.cap_source,
            "scheduled_per_minute": None
            if self.scheduled_per_minute is None
            else round(self.scheduled_per_minute, 1),
            "held": self.held,
            "remaining_today": self.remaining,
            "can_finish_today": e.can_finish,
            "fits_today": e.fits,
            "sharing_seconds_left": round(e.seconds_left),
            "granted_last_minute": None if self.pace is None else self.pace.granted_last_minute,
            "booked_ahead_s": None if self.pace is None else round(self.pace.booked_ahead_s, 1),
        }

    def pace_text(self) -> str:
        if self.cap is None:
            return "no cap"
        text = f"{self.cap}/min"
        if self.cap_source == "at_risk":
            text += " (AT_RISK)"
        elif self.cap_source == "line":
            text += " (line)"
        if self.pace is not None:
            text += f", {self.pace.granted_last_minute} in the last minute"
        return text

    def finish_line(self) -> str:
        return self.estimate.one_line(self.phone)


def cap_source(line: LineState, pace: PacePolicy) -> str:
    cap = line_cap(line, pace)
    if cap is None:
        return "none"
    if line.reputation == "AT_RISK" and pace.at_risk_per_minute and cap == pace.at_risk_per_minute:
        base = line.pace_per_minute if line.pace_per_minute is not None else pace.line_per_minute
        if not base or base > cap:
            return "at_risk"
    return "line" if line.pace_per_minute is not None else "default"


def view(
    row: LineRow,
    pace: PacePolicy,
    *,
    now: dt.datetime,
    day: dt.date,
    remaining: int,
    window: LinePace | None = None,
) -> LineView:
    st = row.state
    held = hold_of(st, now)
    cap = line_cap(st, pace)
    return LineView(
        phone=st.phone,
        day=day,
        zone=st.zone.key,
        zone_is_default=row.timezone is None,
        card_active=row.card_active,
        reputation=st.reputation,
        linq_status=st.linq_status,
        paused=st.pause.describe() if st.pause is not None and st.pause.active(now) else None,
        account_paused=st.account_pause.describe()
        if st.account_pause is not None and st.account_pause.active(now)
        else None,
        hours=str(st.hours) if st.hours else None,
        cap=cap,
        cap_source=cap_source(st, pace),
        scheduled_per_minute=scheduled_per_minute(cap, pace),
        held=held.text() if held else None,
        remaining=remaining,
        estimate=estimate(st, pace, now=now, day=day, remaining=remaining),
        pace=window,
    )
