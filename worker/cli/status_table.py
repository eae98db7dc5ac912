"""`cardshare status` as tables for a person at a terminal (rich), safe against stored text."""

from __future__ import annotations

import sys

from rich.console import Console
from rich.table import Table

from worker.cli.common import ago, safe
from worker.ops.status import Counts, Status, first_outbound_line


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


def print_status(st: Status) -> None:
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
