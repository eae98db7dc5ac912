"""The invariant checker: was every due chat-day shared once, and if not, why.

missed = due but never succeeded and not ended for a stated reason (still open after the run,
ended by the day's end, or due with no row at all); a day that ended failed (poison included)
with no call that reached Linq; and a day "confirmed" by a 429 that came outside Linq's 5-minute
window after the unknown attempt it confirms (docs/decisions.md §3, §16). A chat-day held for its
line (paused, CRITICAL or FLAGGED, outside hours, its pace) is intentionally not shared: counted
as held while it waits and as skipped, naming the hold, if its day ended first; never as missed.

duplicates = more than one share Linq accepted for a chat-day: counted from the simulator's log
when one is given, otherwise estimated from our own attempts (2xx answers, plus unknown outcomes
followed by a 2xx).

Chats no sweep reached are judged with the Python rule (`rules.cadence.why_not_due`): the SQL
predicate (`store.due`) only narrows the candidates to the unmarked chats it calls due, so the
checker reads the day's partitions and the due chats, not every chat's facts, and never reports
a chat the Python rule does not call due (docs/decisions.md §2). Every read names the day, so a
check costs what the day holds, not the history (docs/retention.md §7).
"""

from __future__ import annotations

import datetime as dt
import uuid
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any
from zoneinfo import ZoneInfo

from worker.config import LINQ_SHARE_WINDOW_S
from worker.rules.cadence import Policy, day_bounds, why_not_due
from worker.rules.states import MISSABLE_STATUSES, DayStatus
from worker.store.lines import lines
from worker.store.reports import day_attempts, day_entry_groups, repeated_with_success, unmarked_due_facts
from worker.store.sql import Reader


@dataclass
class Duplicate:
    chat_id: uuid.UUID
    accepted: int
    attempts: list[dict[str, Any]]
    explanation: str


@dataclass
class CheckReport:
    day: dt.date
    tracked: int = 0
    unseen_due: list[uuid.UUID] = field(default_factory=list)
    succeeded: int = 0
    confirmed_by_rate_limit: int = 0
    skipped: Counter[str] = field(default_factory=Counter)
    failed: Counter[str] = field(default_factory=Counter)
    unknown: int = 0
    held: Counter[str] = field(default_factory=Counter)  # still waiting for a hold to lift
    missed: list[uuid.UUID] = field(default_factory=list)
    missed_why: dict[uuid.UUID, str] = field(default_factory=dict)
    poison: list[tuple[uuid.UUID, str]] = field(default_factory=list)  # (chat, what crashed)
    duplicates: list[Duplicate] = field(default_factory=list)
    duplicate_source: str = "attempts"

    @property
    def due(self) -> int:
        return self.tracked + len(self.unseen_due)

    @property
    def ok(self) -> bool:
        return not self.missed and not self.duplicates

    def as_dict(self) -> dict[str, Any]:
        return {
            "day": self.day.isoformat(),
            "due": self.due,
            "succeeded": self.succeeded,
            "confirmed_by_rate_limit": self.confirmed_by_rate_limit,
            "skipped": dict(self.skipped),
            "failed": dict(self.failed),
            "unknown": self.unknown,
            "held": dict(self.held),
            "missed": len(self.missed),
            "missed_chats": [str(c) for c in self.missed[:50]],
            "missed_why": {str(c): self.missed_why[c] for c in self.missed[:50] if c in self.missed_why},
            "poison": [{"chat_id": str(c), "reason": r} for c, r in self.poison[:50]],
            "duplicates": len(self.duplicates),
            "duplicate_source": self.duplicate_source,
            "duplicate_details": [
                {
                    "chat_id": str(d.chat_id),
                    "accepted": d.accepted,
                    "explanation": d.explanation,
                    "attempts": d.attempts,
                }
                for d in self.duplicates
            ],
        }

    def lines(self) -> list[str]:
        out = [
            f"day {self.day}: due {self.due}, succeeded {self.succeeded} "
            f"({self.confirmed_by_rate_limit} confirmed by rate limit), unknown {self.unknown}",
            f"missed {len(self.missed)}, duplicate shares {len(self.duplicates)} "
            f"(from {self.duplicate_source})",
        ]
        for label, counts in (("skipped", self.skipped), ("failed", self.failed), ("held", self.held)):
            for reason, n in sorted(counts.items()):
                out.append(f"  {label}: {reason}: {n}")
        for chat in self.missed[:20]:
            why = self.missed_why.get(chat)
            out.append(f"  missed: {chat}{': ' + why if why else ''}")
        for chat, reason in self.poison[:20]:
            out.append(f"  poison: {chat}: {reason}")
        for dup in self.duplicates[:20]:
            out.append(f"  duplicate: {dup.chat_id} accepted {dup.accepted}x: {dup.explanation}")
            for a in dup.attempts:
                out.append(
                    f"    attempt {a['attempt_no']} {a['started_at']} outcome={a['outcome']} "
                    f"http={a['http_status']} task={a['task_id']}"
                )
        return out


def run_check(
    session: Reader,
    day: dt.date,
    policy: Policy,
    *,
    now: dt.datetime,
    share_events: Sequence[Mapping[str, Any]] | None = None,
) -> CheckReport:
    """Check `day`. `share_events` (the simulator's log) makes duplicate counting exact."""
    report = CheckReport(day)
    known = lines(session, policy.zone)
    zones = {r.state.phone: r.state.zone for r in known}
    reached_sim = None if share_events is None else _reached_from_events(day, policy, share_events, zones)
    # The day's chat-days come grouped (status, reason, reached, confirmation): counted by the
    # group, named one by one only where a chat can be missed or poisoned.
    for g in day_entry_groups(session, day, window_s=LINQ_SHARE_WINDOW_S):
        report.tracked += g.count
        reason = g.reason.rstrip(":")
        if g.status == DayStatus.SUCCEEDED:
            report.succeeded += g.count
            report.confirmed_by_rate_limit += g.count if g.confirmed_by_rate_limit else 0
            if g.confirmed_by_rate_limit and not g.confirmation_in_window:
                for chat, _ in g.named():
                    report.missed.append(chat)
                    report.missed_why[chat] = (
                        "confirmed by a 429 that came 300 s or more after the unknown attempt: "
                        "not the share window's answer"
                    )
        elif g.status == DayStatus.SKIPPED:
            report.skipped[reason] += g.count
        elif g.status == DayStatus.FAILED:
            report.failed[reason] += g.count
            for chat, full_reason in g.named():
                reached = g.reached_linq or (reached_sim is not None and str(chat) in reached_sim)
                if reason == "poison":
                    report.poison.append((chat, full_reason or "poison"))
                if reason.startswith("day_over"):
                    report.missed.append(chat)
                elif not reached:
                    report.missed.append(chat)
                    report.missed_why[chat] = f"ended {reason} with no call that reached Linq"
        elif g.status == DayStatus.UNKNOWN:
            report.unknown += g.count
        elif g.status == DayStatus.HELD:
            # Waiting for its line's hold to lift (or its pace slot): intentionally not shared yet.
            report.held[reason.split(":", 1)[0]] += g.count
        elif g.status in MISSABLE_STATUSES:
            report.missed.extend(chat for chat, _ in g.named())
    # Each line's own day (docs/decisions.md §12): only lines for which `day` is today can have
    # due chats that no sweep reached yet.
    current = {r.state.phone: day for r in known if r.state.today(now) == day}
    report.unseen_due = _unseen_due(session, current, policy, now)
    report.missed.extend(report.unseen_due)
    if share_events is not None:
        report.duplicate_source = "simulator"
        report.duplicates = _duplicates_from_events(session, day, policy, share_events, zones)
    else:
        report.duplicates = _duplicates_from_attempts(session, day)
    return report


def _reached_from_events(
    day: dt.date, policy: Policy, events: Sequence[Mapping[str, Any]], zones: Mapping[str, ZoneInfo]
) -> set[str]:
    """Chats any of whose share calls of `day` (in their line's zone) reached the simulator,
    answered or not."""
    spans: dict[ZoneInfo, tuple[float, float]] = {}
    out: set[str] = set()
    for e in events:
        zone = zones.get(str(e.get("line") or ""), policy.zone)
        if zone not in spans:
            start, end = day_bounds(day, zone)
            spans[zone] = (start.timestamp(), end.timestamp())
        lo, hi = spans[zone]
        if lo <= float(e["at"]) < hi:
            out.add(str(e["chat_id"]))
    return out


def _unseen_due(
    session: Reader, line_days: dict[str, dt.date], policy: Policy, now: dt.datetime
) -> list[uuid.UUID]:
    """Chats due now that have no chat-day row at all: no sweep reached them. A held line's chats
    count too: the sweep marks them held, so none may be missing. The SQL due rule picks the
    candidates (one statement on the day's partitions, not every chat's facts in Python) and
    each is judged again with the Python rule, so a chat the SQL alone calls due is never
    reported; a table test keeps the two rules in step (docs/decisions.md §2)."""
    return [
        chat_id
        for chat_id, facts in unmarked_due_facts(session, line_days=line_days, now=now, policy=policy)
        if why_not_due(facts, now=now, policy=policy, shared_today=False) is None
    ]


def _attempt_rows(session: Reader, chat_id: uuid.UUID, day: dt.date) -> list[dict[str, Any]]:
    return [
        {k: (v.isoformat() if isinstance(v, dt.datetime) else v) for k, v in row.items()}
        for row in day_attempts(session, chat_id, day)
    ]


def explain(attempts: Sequence[Mapping[str, Any]]) -> str:
    """Why a chat-day was accepted twice, read from its audit rows."""
    lost = [a for a in attempts if a["outcome"] is None]
    unknown = [a for a in attempts if a["outcome"] == "unknown"]
    if lost:
        return (
            f"{len(lost)} attempt(s) never recorded an outcome (worker died after sending); the "
            "retry came after Linq's 5-minute window, so no 429 could confirm the first share"
        )
    if unknown:
        return (
            f"{len(unknown)} attempt(s) ended unknown (read timeout); the retry came after Linq's "
            "5-minute window"
        )
    return "no attempt of ours explains it: a share made outside cardshare, or a bug"


def _duplicates_from_events(
    session: Reader,
    day: dt.date,
    policy: Policy,
    events: Sequence[Mapping[str, Any]],
    zones: Mapping[str, ZoneInfo],
) -> list[Duplicate]:
    """Accepted shares per chat within `day` in its line's zone (the simulator names the line)."""
    bounds: dict[ZoneInfo, tuple[float, float]] = {}

    def within(event: Mapping[str, Any]) -> bool:
        zone = zones.get(str(event.get("line") or ""), policy.zone)
        if zone not in bounds:
            start, end = day_bounds(day, zone)
            bounds[zone] = (start.timestamp(), end.timestamp())
        lo, hi = bounds[zone]
        return lo <= float(event["at"]) < hi

    accepted: Counter[str] = Counter(
        str(e["chat_id"]) for e in events if e.get("outcome") == "accepted" and within(e)
    )
    out = []
    for chat, n in sorted(accepted.items()):
        if n > 1:
            chat_id = uuid.UUID(chat)
            attempts = _attempt_rows(session, chat_id, day)
            out.append(Duplicate(chat_id, n, attempts, explain(attempts)))
    return out


def possible_duplicate(attempts: Sequence[Mapping[str, Any]], window_s: float = 300.0) -> bool:
    """From our audit rows alone: two 2xx answers, or an unknown outcome followed by a 2xx only
    after Linq's share window (inside it, an accepted first share would have drawn a 429)."""
    oks = [a for a in attempts if a["http_status"] is not None and 200 <= a["http_status"] < 300]
    if len(oks) > 1:
        return True
    maybe = [a for a in attempts if a["outcome"] in (None, "unknown")]
    return any(
        (_ts(ok["started_at"]) - _ts(m["started_at"])).total_seconds() >= window_s
        for m in maybe
        for ok in oks
        if _ts(ok["started_at"]) > _ts(m["started_at"])
    )


def _ts(value: Any) -> dt.datetime:
    return value if isinstance(value, dt.datetime) else dt.datetime.fromisoformat(str(value))


def _duplicates_from_attempts(session: Reader, day: dt.date) -> list[Duplicate]:
    out = []
    for chat_id in repeated_with_success(session, day):
        attempts = _attempt_rows(session, chat_id, day)
        if possible_duplicate(attempts):
            oks = sum(1 for a in attempts if a["http_status"] and 200 <= a["http_status"] < 300)
            out.append(Duplicate(chat_id, oks, attempts, "possible: " + explain(attempts)))
    return out
