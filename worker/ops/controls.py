"""The operator's controls on lines: pause and resume (one line, or the whole account), a line's
time zone, hours and pace. Each change is one transaction with its `audit_events` row; what a
change lets go (held chat-days) is re-armed in the same transaction, and `resume` runs a release
pass at once so the line's due chat-days go out without waiting (docs/decisions.md §10-§12).

Input is checked before anything is written (InputError, one line, exit 2).
"""

from __future__ import annotations

import datetime as dt
import getpass
import socket
import zoneinfo
from collections.abc import Callable
from dataclasses import dataclass

from worker.deps import Deps
from worker.errors import InputError
from worker.rules.cadence import share_day
from worker.rules.gate import Hours, LineState, hold_of, parse_until
from worker.store import lines as store
from worker.store.audit import audit
from worker.store.session import transaction

ACCOUNT = "account"  # the audit subject of account-wide actions


def operator() -> str:
    """Who acts: the OS user and host (recorded with every pause)."""
    try:
        user = getpass.getuser()
    except (KeyError, OSError):
        user = "unknown"
    return f"{user}@{socket.gethostname()}"


@dataclass(frozen=True)
class Done:
    """What a control did, in one line, and how many held chat-days it let go."""

    message: str
    rearmed: int = 0


def _line(deps: Deps, phone: str) -> store.LineRow:
    with transaction(deps.sessions) as s:
        found = store.lines(s, deps.settings.zone, [phone])
    if not found:
        raise InputError(f"line {phone} is unknown to cardshare (no card, sync, webhook or import named it)")
    return found[0]


def until_of(text: str | None, *, now: dt.datetime, zone: zoneinfo.ZoneInfo) -> dt.datetime | None:
    if text is None:
        return None
    try:
        return parse_until(text, now=now, zone=zone)
    except ValueError as exc:
        raise InputError(str(exc)) from None


def pause(
    deps: Deps, phone: str | None, *, reason: str | None, until: str | None, by: str | None = None
) -> Done:
    """Pause one line (`phone`) or, with None, every line."""
    now = deps.clock()
    who = by or operator()
    if reason is not None and len(reason) > 300:
        raise InputError("--reason is longer than 300 characters")
    if phone is None:
        when = until_of(until, now=now, zone=deps.settings.zone)
        with transaction(deps.sessions) as s:
            store.pause_account(s, until=when, reason=reason, by=who)
            audit(
                s,
                actor="cli",
                action="pause",
                chat_ref=ACCOUNT,
                outcome="paused",
                detail=_detail(reason, when, who),
            )
        return Done(f"paused every line{_until(when)}: nothing is shared until `cardshare line resume --all`")
    row = _line(deps, phone)
    when = until_of(until, now=now, zone=row.state.zone)
    with transaction(deps.sessions) as s:
        store.pause_line(s, phone, until=when, reason=reason, by=who)
        audit(
            s,
            actor="cli",
            action="line.pause",
            chat_ref=phone,
            outcome="paused",
            detail=_detail(reason, when, who),
        )
    return Done(
        f"paused {phone}{_until(when)}: its due chats wait; `cardshare line resume {phone}` lets them go"
    )


def resume(deps: Deps, phone: str | None, *, release: Callable[[], object] | None = None) -> Done:
    """Lift the pause of one line or of the account; held chat-days go out at the line's pace."""
    now = deps.clock()
    with transaction(deps.sessions) as s:
        rows = store.lines(s, deps.settings.zone, None if phone is None else [phone])
        if phone is not None and not rows:
            raise InputError(
                f"line {phone} is unknown to cardshare (no card, sync, webhook or import named it)"
            )
        was = store.resume_account(s) if phone is None else store.resume_line(s, phone)
        days = {r.state.today(now) for r in rows} or {share_day(now, deps.settings.zone)}
        rearmed = store.rearm_held(s, days=days, lines=None if phone is None else [phone])
        audit(
            s,
            actor="cli",
            action="resume" if phone is None else "line.resume",
            chat_ref=phone or ACCOUNT,
            outcome="resumed" if was else "not_paused",
            detail=f"by {operator()}; {rearmed} held chat-day(s) re-armed",
        )
    if release is not None and rearmed:
        release()
    what = "every line" if phone is None else phone
    if not was:
        return Done(f"{what} was not paused ({rearmed} held chat-day(s) re-checked)", rearmed)
    still = ""
    if phone is not None:
        held = hold_of(_line(deps, phone).state, now)
        if held is not None:
            still = f"; still held: {held.text()}"
    return Done(f"resumed {what}: {rearmed} held chat-day(s) go out at the line's pace{still}", rearmed)


def set_line(
    deps: Deps,
    phone: str,
    *,
    zone: str | None = None,
    hours: str | None = None,
    pace: str | None = None,
) -> Done:
    """`--timezone ZONE|default`, `--hours HH:MM-HH:MM|none`, `--pace N|default`."""
    if zone is None and hours is None and pace is None:
        raise InputError("nothing to set: give --timezone, --hours or --pace")
    now = deps.clock()
    row = _line(deps, phone)
    changes: dict[str, object] = {}
    said: list[str] = []
    if zone is not None:
        new_zone = _zone(deps, zone)
        _check_day_does_not_go_back(row.state, new_zone, now, deps.settings.zone)
        changes["zone"] = None if new_zone is None else new_zone.key
        said.append(f"time zone {new_zone.key if new_zone else deps.settings.timezone + ' (the default)'}")
    if hours is not None:
        parsed = _hours(hours)
        changes["hours"] = parsed
        said.append(f"hours {parsed}" if parsed else "hours: all day")
    if pace is not None:
        per_minute = _pace(pace)
        changes["pace"] = per_minute
        said.append(
            f"pace {per_minute}/min"
            if per_minute is not None
            else f"pace: the default ({deps.settings.line_shares_per_minute}/min)"
        )
    with transaction(deps.sessions) as s:
        store.set_line(s, phone, **changes)
        day = row.state.today(now)
        rearmed = store.rearm_held(s, days=[day], lines=[phone])
        if "pace" in changes:
            rearmed += store.respread(s, line=phone, day=day)
        audit(
            s,
            actor="cli",
            action="line.set",
            chat_ref=phone,
            outcome="set",
            detail=f"{'; '.join(said)} by {operator()}",
        )
    if "pace" in changes and deps.pacer is not None:
        deps.pacer.reset(phone)
    return Done(f"{phone}: {', '.join(said)}", rearmed)


def _zone(deps: Deps, text: str) -> zoneinfo.ZoneInfo | None:
    if text.strip().lower() == "default":
        return None
    try:
        zone = zoneinfo.ZoneInfo(text.strip())
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        raise InputError(f"--timezone {text!r} is not an IANA time zone (e.g. America/New_York)") from None
    with transaction(deps.sessions) as s:
        if not store.database_knows_zone(s, zone.key):
            raise InputError(f"--timezone {text!r}: PostgreSQL does not know this zone; update its tzdata")
    return zone


def _check_day_does_not_go_back(
    line: LineState, new: zoneinfo.ZoneInfo | None, now: dt.datetime, default: zoneinfo.ZoneInfo
) -> None:
    """The line's day may not move back to a date that may already have had its share."""
    old_day = share_day(now, line.zone)
    new_zone = new or default
    new_day = share_day(now, new_zone)
    if new_day < old_day:
        start = dt.datetime.combine(old_day, dt.time(0), tzinfo=new_zone).astimezone(dt.UTC)
        raise InputError(
            f"--timezone {new_zone.key} would move {line.phone}'s day back from {old_day} to {new_day}; "
            f"set it after {start:%Y-%m-%dT%H:%MZ}, when {old_day} begins there"
        )


def _hours(text: str) -> Hours | None:
    if text.strip().lower() in ("none", "all", "all-day", "-"):
        return None
    try:
        return Hours.parse(text)
    except ValueError as exc:
        raise InputError(f"--hours: {exc}") from None


def _pace(text: str) -> int | None:
    if text.strip().lower() == "default":
        return None
    try:
        value = int(text)
    except ValueError:
        raise InputError(
            f"--pace {text!r} is not a whole number of shares per minute (or `default`)"
        ) from None
    if value < 0 or value > 100_000:
        raise InputError("--pace must be within 0..100000 shares per minute (0: no cap)")
    return value


def _until(when: dt.datetime | None) -> str:
    return f" until {when:%Y-%m-%dT%H:%MZ}" if when else ""


def _detail(reason: str | None, when: dt.datetime | None, who: str) -> str:
    return f"reason: {reason or '-'}; until: {when.isoformat() if when else 'resumed'}; by {who}"
