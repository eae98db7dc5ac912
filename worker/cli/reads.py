"""`cardshare status`, `history` and `check`: the read-only commands an operator runs most.

Against running servers they read through one psycopg connection and never import SQLAlchemy,
Celery or httpx (`common.read_boot`; store/sql.py says why); with embedded servers to start,
they boot like every other command.
"""

from __future__ import annotations

import datetime as dt
import json
import sys
from collections.abc import Sequence

import click

from worker.cli.common import (
    parse_chat_id,
    parse_day,
    read_boot,
    refuse_past_retention,
    render_table,
    safe,
)
from worker.deps import policy_of, utcnow
from worker.errors import CardshareError, InputError, UnknownChat
from worker.ops import status as status_mod
from worker.ops.check import run_check
from worker.ops.status import History, reading
from worker.rules.cadence import share_day


def register(cli: click.Group) -> None:
    """Add `status`, `history` and `check` to the `cardshare` group."""
    cli.add_command(status)
    cli.add_command(history)
    cli.add_command(check)


# --------------------------------------------------------------------------- status


@click.command()
@click.option("--day", "day_text", default=None, help="YYYY-MM-DD in CARDSHARE_TIMEZONE (default today).")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@click.option(
    "--live",
    is_flag=True,
    help="Count today's chat-days now instead of reading beat's last count (seconds at a million).",
)
def status(day_text: str | None, as_json: bool, live: bool) -> None:
    """How the day is going: per line and in total, last sweep, queue, workers, beat."""
    day = parse_day(day_text)
    with read_boot() as (settings, db):
        refuse_past_retention(settings, day)
        st = status_mod.collect_for(db, settings, day, live=live)
    if as_json:
        click.echo(json.dumps(st.as_dict(), indent=2))
        return
    # Here: rich costs ~0.1 s to import on the 2-core box, and `--json` (scripts, probes) skips it.
    from worker.cli.status_table import print_status

    print_status(st)


# --------------------------------------------------------------------------- history


@click.command()
@click.argument("chat_id")
@click.option(
    "--days", type=click.IntRange(min=1, max=36_600), default=None, help="Only the last N days (default all)."
)
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def history(chat_id: str, days: int | None, as_json: bool) -> None:
    """Every day and HTTP attempt of CHAT_ID, and why it is not due today."""
    cid = parse_chat_id(chat_id)  # a malformed id fails before anything starts
    with read_boot() as (settings, db):
        story = status_mod.history(
            db,
            cid,
            now=utcnow(),
            policy=policy_of(settings),
            days=days,
            retention_days=settings.retention_days,
        )
    if story is None:
        raise UnknownChat(f"chat {cid} is unknown to cardshare (no webhook, sync or import has recorded it)")
    if as_json:
        click.echo(json.dumps(story.as_dict(), indent=2))
        return
    for line in history_lines(story):
        click.echo(safe(line))


def _ts(value: dt.datetime | None) -> str:
    return "-" if value is None else value.astimezone(dt.UTC).isoformat(timespec="seconds")


def history_lines(story: History) -> list[str]:
    """The plain-text history: stable for pipes and greps."""
    c = story.chat
    out = [
        f"chat {c.chat_id}: line {c.line_phone}, {c.service or 'unknown service'}"
        f"{', group' if c.is_group else ''}, card {'active' if c.card_active else 'inactive'}",
        f"  outbound: first {_ts(c.first_outbound_at)}, last {_ts(c.last_outbound_at)}"
        f"{'; opted out ' + _ts(c.opted_out_at) if c.opted_out else ''}"
        f"{'; gone at Linq since ' + _ts(c.not_found_at) if c.not_found_at else ''}",
    ]
    if story.today_status == "succeeded":
        out.append(f"today ({story.today}): shared")
    elif story.due_today and story.held_today:
        out.append(f"today ({story.today}): due, held: {story.held_today}")
    elif story.due_today:
        state = story.today_status or "not enqueued yet; the next sweep will"
        out.append(f"today ({story.today}): due ({state})")
    else:
        out.append(f"today ({story.today}): not due: {story.why_not_today}")
    if not story.days:
        out.append("no share days recorded")
    for d in story.days:
        extra = []
        if d.confirmed_by_rate_limit:
            extra.append("confirmed by 429")
        if d.lost_claims:
            extra.append(f"{d.lost_claims} lost claim(s)")
        out.append("")
        out.append(
            f"{d.day}: {d.status}{': ' + d.reason if d.reason else ''} "
            f"({d.attempts} attempt(s), {d.claims} claim(s), {d.enqueues} enqueue(s)"
            f"{', ' + ', '.join(extra) if extra else ''}; finished {_ts(d.finished_at)})"
        )
        attempts = story.attempts_of(d.day)
        if attempts:
            rows: list[Sequence[object]] = [
                (
                    f"#{a.attempt_no}",
                    _ts(a.started_at),
                    a.outcome or "in flight/lost",
                    a.http_status,
                    a.linq_code,
                    a.trace_id,
                    a.task_id,
                    (a.error or "")[:80] or None,
                )
                for a in attempts
            ]
            table = render_table(
                ["ATTEMPT", "STARTED", "OUTCOME", "HTTP", "CODE", "TRACE", "TASK", "ERROR"], rows
            )
            out.extend("  " + line for line in table.splitlines())
    if story.truncated_before is not None:
        out.append("")
        out.append(
            f"days before {story.truncated_before} are past retention "
            f"(CARDSHARE_RETENTION_DAYS={story.retention_days}): their chat-days and attempts are dropped"
        )
    if story.audit:
        out.append("")
        out.append("operator actions:")
        out.extend(
            f"  {_ts(a.at)} {a.actor} {a.action}: {a.outcome}{': ' + a.detail if a.detail else ''}"
            for a in story.audit
        )
    return out


# --------------------------------------------------------------------------- check


@click.command()
@click.option("--day", "day_text", default=None, help="YYYY-MM-DD in CARDSHARE_TIMEZONE (default today).")
@click.option(
    "--simulator",
    "sim_url",
    default=None,
    help="Base URL of a Linq simulator whose share log makes duplicate counts exact.",
)
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def check(day_text: str | None, sim_url: str | None, as_json: bool) -> None:
    """Was every due chat-day shared exactly once? Exit 1 if any was missed or duplicated."""
    asked = parse_day(day_text or None)
    with read_boot() as (settings, db):
        day = asked or share_day(utcnow(), settings.zone)
        refuse_past_retention(settings, day)
        events = None
        if sim_url:
            events = _simulator_events(sim_url)
        with reading(db) as s:
            report = run_check(s, day, policy_of(settings), now=utcnow(), share_events=events)
        if as_json:
            click.echo(json.dumps(report.as_dict(), indent=2, default=str))
        else:
            for line in report.lines():
                click.echo(safe(line))
        if not report.ok:
            sys.exit(1)


def _simulator_events(url: str) -> list[dict[str, object]]:
    """The simulator's share log, or one line saying why it cannot be had."""
    if not url.startswith(("http://", "https://")):
        raise InputError(f"--simulator {safe(url[:80])!r} is not an http(s) URL")
    # Here, not at the top: httpx costs these commands ~0.1 s to import, and only
    # `check --simulator` uses it.
    import httpx

    from worker.simulator import SimulatorAdmin
    from worker.simulator.client import SimulatorAdminError

    try:
        with SimulatorAdmin(url) as admin:
            return admin.share_events()
    except (httpx.HTTPError, SimulatorAdminError, ValueError, KeyError, TypeError) as exc:
        raise CardshareError(
            f"--simulator {safe(url[:80])}: no share log there ({type(exc).__name__}: {safe(str(exc)[:120])})"
        ) from None
