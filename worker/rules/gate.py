"""Pure rules: is a line held, how fast may it share, and what happens to a due chat-day now.

A chat that is not due (rules.cadence) never gets today's share. A due chat-day of a *held* line
waits: the line is paused (itself or the whole account), CRITICAL or FLAGGED at Linq, or outside
its sharing hours; it is shared later the same day when the hold lifts, and ends `skipped`,
naming the hold, if its day ends first. Pace is the last hold: each line has a cap of shares per
rolling minute, and the passes give its chat-days slots spread at that cap (docs/decisions.md
§10-§12). `decide` is the one function every path asks (the sweep, the release pass, the share
task, `cardshare share`, `history`); no I/O here, the clock is an argument.
"""

from __future__ import annotations

import datetime as dt
import enum
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass
from zoneinfo import ZoneInfo

from worker.rules.cadence import NotDue, Policy, day_bounds, share_day, why_not_due
from worker.rules.facts import ChatFacts

REPUTATIONS = ("HEALTHY", "AT_RISK", "CRITICAL")
LINE_STATUSES = ("ACTIVE", "FLAGGED")

# Linq's pace is per rolling minute as Linq sees it. A call reaches Linq a little after its slot
# was granted here, so the grant log spans this much longer than a minute: a share granted at t
# and received at most PACE_MARGIN_S later still lands in the minute the log counted it in.
PACE_WINDOW_S = 60.0
PACE_MARGIN_S = 2.0
PACE_LOG_S = PACE_WINDOW_S + PACE_MARGIN_S


class HoldReason(enum.StrEnum):
    """Why a due chat-day waits, in the order they are checked. Each is the first word of the
    chat-day's reason while it is held, and when its day ends held (`skipped`)."""

    ACCOUNT_PAUSED = "account_paused"
    LINE_PAUSED = "line_paused"
    LINE_FLAGGED = "line_flagged"
    LINE_CRITICAL = "line_critical"
    OUTSIDE_HOURS = "outside_hours"
    PACE = "pace"


HOLD_REASONS = frozenset(r.value for r in HoldReason)


class Verdict(enum.StrEnum):
    GO = "go"  # share now (at the line's pace)
    HOLD = "hold"  # due, but wait until the hold lifts
    NOT_DUE = "not_due"  # no share today, for a rule of rules.cadence


@dataclass(frozen=True)
class Pause:
    """A pause of one line or of the whole account, as `cardshare line pause` recorded it."""

    at: dt.datetime
    until: dt.datetime | None = None
    reason: str | None = None
    by: str | None = None

    def active(self, now: dt.datetime) -> bool:
        return self.until is None or now < self.until

    def describe(self) -> str:
        parts = [self.reason or "no reason given"]
        if self.by:
            parts.append(f"by {self.by}")
        parts.append(f"since {_utc(self.at)}")
        parts.append(f"until {_utc(self.until)}" if self.until else "until resumed")
        return ", ".join(parts)


_HOURS = re.compile(r"^\s*([0-2]?\d):([0-5]\d)\s*-\s*([0-2]?\d):([0-5]\d)\s*$")


@dataclass(frozen=True)
class Hours:
    """Local sharing hours [start, end) in minutes after the line's local midnight, start < end.

    A window across midnight is refused: the claim key is the local calendar day, and such a
    window would belong to two days (docs/decisions.md §12). Move the day with the line's zone.
    """

    start: int
    end: int

    def __post_init__(self) -> None:
        if not 0 <= self.start < self.end <= 24 * 60:
            raise ValueError("hours must be HH:MM-HH:MM with 00:00 <= start < end <= 24:00")

    @classmethod
    def parse(cls, text: str) -> Hours:
        """`09:00-20:00`; ValueError with a one-line reason otherwise."""
        m = _HOURS.match(text)
        if m is None:
            raise ValueError(f"hours {text!r} are not HH:MM-HH:MM (e.g. 09:00-20:00)")
        h1, m1, h2, m2 = (int(g) for g in m.groups())
        start, end = h1 * 60 + m1, h2 * 60 + m2
        if h1 > 23 or h2 > 24 or (h2 == 24 and m2):
            raise ValueError(f"hours {text!r}: a time of day runs from 00:00 to 24:00")
        if start >= end:
            raise ValueError(
                f"hours {text!r} end before they start: a window across midnight would belong to two "
                "days; give the line a time zone whose day fits the window instead"
            )
        return cls(start, end)

    def __str__(self) -> str:
        return f"{self.start // 60:02d}:{self.start % 60:02d}-{self.end // 60:02d}:{self.end % 60:02d}"

    def contains(self, local: dt.datetime) -> bool:
        minute = local.hour * 60 + local.minute
        return self.start <= minute < self.end

    def opening(self, day: dt.date, zone: ZoneInfo) -> dt.datetime:
        """When `day`'s window opens, as an aware UTC time (a time skipped by DST moves forward)."""
        return _local(day, self.start, zone)

    def closing(self, day: dt.date, zone: ZoneInfo) -> dt.datetime:
        return _local(day, self.end, zone)


def _local(day: dt.date, minute: int, zone: ZoneInfo) -> dt.datetime:
    if minute >= 24 * 60:
        return day_bounds(day, zone)[1]
    wall = dt.datetime.combine(day, dt.time(minute // 60, minute % 60), tzinfo=zone)
    # A wall time inside a spring-forward gap does not exist; zoneinfo maps it past the gap.
    return wall.astimezone(dt.UTC)


def _utc(when: dt.datetime) -> str:
    return when.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%MZ")


@dataclass(frozen=True)
class LineState:
    """What the gate knows of one line: Linq's view of it, the operator's controls, its day."""

    phone: str
    zone: ZoneInfo
    reputation: str | None = None  # None: never read; Linq says lines start HEALTHY
    linq_status: str | None = None  # None: no status webhook yet (ACTIVE)
    pause: Pause | None = None
    account_pause: Pause | None = None
    hours: Hours | None = None
    pace_per_minute: int | None = None  # this line's cap; None: CARDSHARE_LINE_SHARES_PER_MINUTE

    def today(self, now: dt.datetime) -> dt.date:
        return share_day(now, self.zone)

    def day_end(self, day: dt.date) -> dt.datetime:
        return day_bounds(day, self.zone)[1]


@dataclass(frozen=True)
class PacePolicy:
    """The configurable parts of pace (settings); 0 means no cap."""

    line_per_minute: int = 60
    at_risk_per_minute: int = 20
    account_per_minute: int = 0
    release_interval_s: float = 5.0


@dataclass(frozen=True)
class Held:
    """A hold: why, in words, and when it lifts by itself (None: only an event lifts it)."""

    reason: HoldReason
    detail: str
    until: dt.datetime | None = None

    def text(self) -> str:
        return f"{self.reason.value}: {self.detail}"


def hold_of(line: LineState, now: dt.datetime) -> Held | None:
    """The first hold on `line` now, or None when it may share."""
    if line.account_pause is not None and line.account_pause.active(now):
        p = line.account_pause
        return Held(HoldReason.ACCOUNT_PAUSED, "every line is paused: " + p.describe(), p.until)
    if line.pause is not None and line.pause.active(now):
        return Held(HoldReason.LINE_PAUSED, line.pause.describe(), line.pause.until)
    if line.linq_status == "FLAGGED":
        return Held(HoldReason.LINE_FLAGGED, "Linq flagged the line (phone_number.status_updated)")
    if line.reputation == "CRITICAL":
        return Held(HoldReason.LINE_CRITICAL, "Linq rates the line's reputation CRITICAL: pause outbound")
    if line.hours is not None:
        local = now.astimezone(line.zone)
        if not line.hours.contains(local):
            day = local.date()
            opening = line.hours.opening(day, line.zone)
            if opening <= now:  # after today's window: tomorrow's
                opening = line.hours.opening(day + dt.timedelta(days=1), line.zone)
            return Held(
                HoldReason.OUTSIDE_HOURS,
                f"the line shares {line.hours} {line.zone.key} time; next opening {_utc(opening)}",
                opening,
            )
    return None


def line_cap(line: LineState, pace: PacePolicy) -> int | None:
    """Shares per rolling minute this line may make now; None: no cap."""
    base = line.pace_per_minute if line.pace_per_minute is not None else pace.line_per_minute
    cap: int | None = base if base > 0 else None
    if line.reputation == "AT_RISK" and pace.at_risk_per_minute > 0:
        cap = pace.at_risk_per_minute if cap is None else min(cap, pace.at_risk_per_minute)
    return cap


def spacing_s(cap: int | None, pace: PacePolicy) -> float:
    """Seconds between a line's slots. Calls go out in bunches at release passes; slots this far
    apart keep any bunch plus a full pace log under the cap (docs/decisions.md §11)."""
    if cap is None:
        return 0.0
    return (PACE_LOG_S + pace.release_interval_s) / cap


def scheduled_per_minute(cap: int | None, pace: PacePolicy) -> float | None:
    """The rate the slots give: a little under the cap, by design."""
    spacing = spacing_s(cap, pace)
    return None if spacing == 0 else 60.0 / spacing


def publish_horizon(now: dt.datetime, pace: PacePolicy) -> dt.datetime:
    """Slots up to here go out now; later ones wait for the release pass that reaches them."""
    return now + dt.timedelta(seconds=pace.release_interval_s)


def slot_times(start: float, spacing: float, n: int) -> list[float]:
    return [start + i * spacing for i in range(n)]


@dataclass(frozen=True)
class Decision:
    verdict: Verdict
    not_due: NotDue | None = None
    held: Held | None = None


def decide(
    chat: ChatFacts,
    line: LineState,
    *,
    now: dt.datetime,
    policy: Policy,
    shared_today: bool,
    day_closed: bool = False,
) -> Decision:
    """Share now, hold, or not due: the chat's rules first, then the line's holds."""
    why = why_not_due(
        chat, now=now, policy=policy, shared_today=shared_today, day_closed=day_closed, zone=line.zone
    )
    if why is not None:
        return Decision(Verdict.NOT_DUE, not_due=why)
    held = hold_of(line, now)
    if held is not None:
        return Decision(Verdict.HOLD, held=held)
    return Decision(Verdict.GO)


def hold_lease(held: Held, line: LineState, day: dt.date, now: dt.datetime) -> dt.datetime:
    """Until when a held chat-day rests: when the hold lifts by itself, or the end of its day (an
    event that lifts it earlier re-arms the chat-day, docs/decisions.md §10)."""
    end = line.day_end(day)
    if held.until is None:
        return end
    return max(now, min(held.until, end))


def hold_kind(reason: str | None) -> str | None:
    """The hold a chat-day's reason names (its first word), or None."""
    if not reason:
        return None
    word = reason.split(":", 1)[0].strip()
    return word if word in HOLD_REASONS else None


@dataclass(frozen=True)
class Estimate:
    """Can a line's remaining due chat-days be shared before its day (or its hours) end?"""

    remaining: int
    can_finish: bool
    fits: int | None  # how many fit at the scheduled pace; None: no cap
    seconds_left: float  # sharing time left today (after the hold lifts by itself, if it does)
    per_minute: float | None
    blocked: str | None = None  # the hold that stops it until an event lifts it

    def one_line(self, line: str) -> str:
        rate = "no cap" if self.per_minute is None else f"{self.per_minute:,.0f}/min"
        left = _duration(self.seconds_left)
        if self.remaining == 0:
            return f"line {line}: nothing left to share today"
        if self.blocked:
            return f"line {line} cannot finish today: {self.remaining:,} left, held ({self.blocked})"
        if self.can_finish:
            return f"line {line}: {self.remaining:,} left, can finish today at {rate} ({left} left)"
        return (
            f"line {line} cannot finish today: {self.remaining:,} left, about {self.fits or 0:,} fit "
            f"in the {left} left at {rate}"
        )


def _duration(seconds: float) -> str:
    minutes = max(0, int(seconds // 60))
    return f"{minutes // 60}h{minutes % 60:02d}m"


def estimate(
    line: LineState, pace: PacePolicy, *, now: dt.datetime, day: dt.date, remaining: int
) -> Estimate:
    """Sharing time left on `day` from now (after a hold that lifts by itself, inside the hours)
    times the scheduled pace, against what is left to share."""
    rate = scheduled_per_minute(line_cap(line, pace), pace)
    end = line.day_end(day)
    start = now
    held = hold_of(line, now)
    if held is not None and held.reason is not HoldReason.OUTSIDE_HOURS:
        if held.until is None:
            return Estimate(remaining, remaining == 0, 0, 0.0, rate, blocked=held.text())
        start = max(start, held.until)
    seconds = _sharing_seconds(line, day, start, end)
    if rate is None:
        return Estimate(remaining, seconds > 0 or remaining == 0, None, seconds, None)
    fits = math.floor(seconds / 60.0 * rate)
    return Estimate(remaining, remaining <= fits, fits, seconds, rate)


def _sharing_seconds(line: LineState, day: dt.date, start: dt.datetime, end: dt.datetime) -> float:
    lo, hi = start, end
    if line.hours is not None:
        lo = max(lo, line.hours.opening(day, line.zone))
        hi = min(hi, line.hours.closing(day, line.zone))
    return max(0.0, (hi - lo).total_seconds())


_DURATION = re.compile(r"^(?:(\d+)d)?(?:(\d+)h)?(?:(\d+)m)?(?:(\d+)s)?$")


def parse_until(text: str, *, now: dt.datetime, zone: ZoneInfo) -> dt.datetime:
    """`--until`: a duration (`2h`, `1h30m`, `45m`, `1d`) or an ISO time (`2026-03-02T18:00`,
    with an offset or in `zone`); ValueError with a one-line reason, or if it is not later."""
    raw = text.strip()
    m = _DURATION.match(raw.lower())
    if raw and m is not None and any(m.groups()):
        d, h, mi, se = (int(g or 0) for g in m.groups())
        span = dt.timedelta(days=d, hours=h, minutes=mi, seconds=se)
        if span <= dt.timedelta(0):
            raise ValueError(f"--until {text!r} is not in the future")
        return now + span
    try:
        when = dt.datetime.fromisoformat(raw)
    except ValueError:
        raise ValueError(
            f"--until {text!r} is neither a duration (2h, 1h30m, 45m, 1d) nor an ISO time "
            "(2026-03-02T18:00, with an offset or in the line's zone)"
        ) from None
    if when.tzinfo is None:
        when = when.replace(tzinfo=zone)
    if when <= now:
        raise ValueError(f"--until {text!r} is not in the future (now {_utc(now)})")
    return when.astimezone(dt.UTC)


def line_days(lines: Sequence[LineState], now: dt.datetime) -> dict[str, dt.date]:
    """Each line's own today."""
    return {ln.phone: ln.today(now) for ln in lines}
