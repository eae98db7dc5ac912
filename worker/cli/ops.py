"""Operations commands: `cardshare status`, `history`, `check`, `health`, `web`.

The work happens in `worker.ops` (status, check, health, the status page); `health` itself is
`worker.ops.healthcheck`, light enough for a container healthcheck.
"""

from __future__ import annotations

import datetime as dt
import json
import sys
from collections.abc import Sequence

import click
from rich.console import Console
from rich.table import Table

from worker import runtime
from worker.cli.common import ago, boot, parse_chat_id, parse_day, render_table, safe
from worker.config import Settings
from worker.errors import CardshareError, InputError, UnknownChat
from worker.http_server import address, bind, serve
from worker.ops import day_counts, status_page
from worker.ops import status as status_mod
from worker.ops.check import run_check
from worker.ops.counts_cache import CountsCache
from worker.ops.healthcheck import health
from worker.ops.status import Counts, History, Status, first_outbound_line
from worker.rules.cadence import share_day
from worker.rules.retention import past_retention, past_retention_message


def register(cli: click.Group) -> None:
    """Add the operations commands to the `cardshare` group."""
    cli.add_command(status)
    cli.add_command(count)
    cli.add_command(history)
    cli.add_command(check)
    cli.add_command(health)
    cli.add_command(web)


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
    with boot() as b:
        refuse_past_retention(b.settings, day)
        st = status_mod.collect_for(runtime.get().deps, b.settings, day, live=live)
    if as_json:
        click.echo(json.dumps(st.as_dict(), indent=2))
        return
    _print_status(st)


@click.command()
def count() -> None:
    """Count today's chat-days now and save them for `status` and the page (beat's count pass,
    every CARDSHARE_STATUS_COUNTS_INTERVAL seconds)."""
    with boot(broker=False):  # PostgreSQL only
        report = day_counts.count_today(runtime.get().deps)
    click.echo(report.one_line())


def retention_note(settings: Settings, day: dt.date | None) -> str | None:
    """What is said of a day older than CARDSHARE_RETENTION_DAYS (None for a kept day)."""
    if day is None:
        return None
    today = share_day(runtime.get().deps.clock(), settings.zone)
    if past_retention(day, today, settings.retention_days):
        return past_retention_message(day, today, settings.retention_days)
    return None


def refuse_past_retention(settings: Settings, day: dt.date | None) -> None:
    """A day older than CARDSHARE_RETENTION_DAYS has no rows left to report on: say so (exit 2)."""
    note = retention_note(settings, day)
    if note is not None:
        raise InputError(f"--day {note}")


def _print_lines(console: Console, st: Status) -> None:
    """The lines' safety: the account's pause, each line's hold, pace and whether it can finish
    today, and the open warnings (docs/decisions.md §10-§12)."""
    if st.account_paused:
        console.print(f"ACCOUNT PAUSED: {st.account_paused}", style="red", highlight=False)
    for ln in st.lines:
        v = ln.view
        if v is None:
            continue
        state = f"{v.reputation or 'HEALTHY'}, {v.linq_status or 'ACTIVE'}"
        where = f"{v.day} {v.zone}" + (f", hours {v.hours}" if v.hours else "")
        text = f"  {v.phone} ({where}): {state}; pace {v.pace_text()}"
        if v.held:
            text += f"; held: {v.held}"
        console.print(text, highlight=False)
        if v.remaining and (v.held or not v.estimate.can_finish):
            console.print(f"    {v.finish_line()}", style="red", highlight=False)
    for w in st.warnings:
        console.print(
            f"WARNING #{w.id} {w.kind} ({w.subject}): {w.summary}; "
            f"when handled: `cardshare warnings ack {w.id}`",
            style="red",
            highlight=False,
        )


def _reasons(counter: dict[str, int]) -> str:
    return ", ".join(f"{k} {v}" for k, v in sorted(counter.items()))


def _print_status(st: Status) -> None:
    # A pipe gets no colour and a fixed width, so the table does not wrap at 80 columns.
    # markup=False: stored reasons and names are data; "[/bold]" in one must print as itself.
    console = _SafeConsole(width=None if sys.stdout.isatty() else 140, markup=False)
    table = Table(title=f"cardshare {st.day}", title_justify="left")
    for name in (
        "line",
        "card",
        "due",
        "shared",
        "skipped",
        "failed",
        "unknown",
        "in flight",
        "held",
        "not enqueued",
    ):
        table.add_column(name, justify="left" if name in ("line", "card") else "right")

    def add(label: str, card: str, c: Counts, style: str | None = None) -> None:
        table.add_row(
            safe(label),
            card,
            *(
                str(v)
                for v in (
                    c.due,
                    c.shared,
                    c.skipped_total,
                    c.failed_total,
                    c.unknown,
                    c.in_flight,
                    c.held_total,
                )
            ),
            str(c.not_enqueued),
            style=style,
        )

    for ln in st.lines:
        add(ln.line, {True: "active", False: "inactive", None: "-"}[ln.card_active], ln.counts)
    add("total", "", st.total, style="bold")
    console.print(table)
    if st.counted_at is not None:
        console.print(
            f"chat-day counts as of {st.counted_at.isoformat(timespec='seconds')} "
            f"({ago((st.at - st.counted_at).total_seconds())}, beat's count pass); "
            "`cardshare status --live` counts now",
            highlight=False,
        )
    t = st.total
    if t.confirmed_by_rate_limit:
        console.print(
            f"shared includes {t.confirmed_by_rate_limit} confirmed by Linq's 429 after an unknown outcome"
        )
    if t.skipped:
        console.print(f"skipped by reason: {_reasons(t.skipped)}")
    if t.failed:
        console.print(f"failed by reason: {_reasons(t.failed)}")
    if t.in_flight:
        console.print(f"in flight: {t.queued} queued, {t.claimed} being shared, {t.retry} waiting to retry")
    if t.held:
        console.print(f"held by reason: {_reasons(t.held)}")
    for lat in st.first_outbound:
        console.print(
            f"first outbound -> share accepted {lat.day}: {first_outbound_line(lat)}", highlight=False
        )
    _print_lines(console, st)
    # Recovery passes leave no sweep_runs row (one a minute); beat's line below says when it last sent one.
    run = st.last_sweep
    if run is None:
        console.print("last sweep: none yet")
    else:
        took = "still running" if run.seconds is None else f"took {run.seconds:.1f}s"
        err = f", error: {run.error}" if run.error else ""
        age = (st.at - run.started_at).total_seconds()
        console.print(
            f"last sweep: {run.started_at.isoformat(timespec='seconds')} ({ago(age)}), {took}, "
            f"scanned {run.scanned}, enqueued {run.enqueued}{err}",
            highlight=False,
        )
    if st.broker_error:
        console.print(f"queue and workers: {st.broker_error}", style="red")
    else:
        console.print(
            f"queue: {st.queue_ready} waiting, {st.queue_unacked} delivered and unacknowledged; "
            f"workers live: {st.live_workers}"
        )
        for w in st.workers:
            console.print(
                f"  {w.node} ({w.pool} x{w.concurrency}, pid {w.pid} on {w.host}): "
                f"{'live' if w.live else 'NOT SEEN'}{', STALLED' if w.stalled else ''}, "
                f"heartbeat {ago(w.heartbeat_age_s)}, "
                f"last task {ago(w.last_task_age_s)}, {w.completed} finished, holding {w.held}",
                highlight=False,
            )
        if st.beat is None:
            console.print("beat: no heartbeat (is `cardshare beat` running?)", style="red")
        else:
            b = st.beat
            sent = "; ".join(f"{k.removeprefix('cardshare.')} sent {ago(v)}" for k, v in b.sent_age_s.items())
            console.print(
                f"beat: {'alive' if b.live else 'SILENT'}, heartbeat {ago(b.heartbeat_age_s)} "
                f"(pid {b.pid} on {b.host}){'; ' + sent if sent else ''}",
                highlight=False,
            )
    if st.failures:
        console.print(f"last failures ({len(st.failures)}; `cardshare history CHAT_ID` tells each story):")
        for f in st.failures[:5]:
            console.print(
                f"  {f.at.isoformat(timespec='seconds')} {f.chat_id} {f.day} {f.status}: {f.reason} "
                f"(HTTP {f.http_status or '-'}, code {f.linq_code or '-'}, trace {f.trace_id or '-'})",
                highlight=False,
            )


class _SafeConsole(Console):
    """A console whose every printed string has terminal control characters neutralized."""

    def print(self, *objects: object, **kw: object) -> None:
        super().print(*(safe(o) if isinstance(o, str) else o for o in objects), **kw)  # type: ignore[arg-type]


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
    with boot() as b:
        deps = runtime.get().deps
        story = status_mod.history(
            deps.sessions,
            cid,
            now=deps.clock(),
            policy=deps.policy,
            days=days,
            retention_days=b.settings.retention_days,
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


# --------------------------------------------------------------------------- web


@click.command()
@click.option(
    "--host", default="127.0.0.1", show_default=True, help="Address to listen on (keep it loopback)."
)
@click.option(
    "--port",
    default=8090,
    show_default=True,
    type=click.IntRange(0, 65535),
    help="Port (0 picks a free one).",
)
def web(host: str, port: int) -> None:
    """Serve the read-only status page (today's numbers and the last failures) until stopped."""
    with boot() as b:
        # Counting a day reads all its chat-days: each day's counts at most every 15 s, whatever
        # the number of open pages (worker/ops/counts_cache.py).
        counts = CountsCache(runtime.get().deps.sessions)

        def collect(day: dt.date | None) -> Status:
            # A day past retention answers with its (empty) numbers and says why they are empty.
            st = status_mod.collect_for(runtime.get().deps, b.settings, day, counts_reader=counts)
            st.past_retention = retention_note(b.settings, day)
            return st

        app = status_page.create_app(collect)
        try:
            sock = bind(host, port)
        except OSError as exc:
            raise InputError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None
        click.echo(f"status page at {address(sock)}/")
        serve(app, sock, header_timeout_s=b.settings.webhook_header_timeout_s)


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
    with boot() as b:
        day = parse_day(day_text or None) or share_day(dt.datetime.now(dt.UTC), b.settings.zone)
        refuse_past_retention(b.settings, day)
        events = None
        if sim_url:
            events = _simulator_events(sim_url)
        deps = runtime.get().deps
        with deps.sessions() as s:
            report = run_check(s, day, deps.policy, now=dt.datetime.now(dt.UTC), share_events=events)
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
    # Here, not at the top: httpx costs `status` and `history` ~0.1 s to import, and only
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
