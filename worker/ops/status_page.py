"""The status page: one read-only, server-rendered HTML page of today's status and the last failures.

No JavaScript: the page reloads itself every 30 seconds. Numbers carry `data-field` (and
`data-line`) attributes so scripts and tests can read them without scraping the layout.
Bound to loopback by default; it shows chat ids and reasons, so keep it off public interfaces.
"""

from __future__ import annotations

import datetime as dt
import html
from collections.abc import Callable
from typing import TYPE_CHECKING

from worker.ops.lines import LineView
from worker.ops.status import Counts, Status, first_outbound_line
from worker.rules import bounds

if TYPE_CHECKING:
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import Response

REFRESH_S = 30

_STYLE = """
body { font: 14px/1.4 system-ui, sans-serif; margin: 1.5rem; color: #222; }
table { border-collapse: collapse; margin: 0.5rem 0 1.5rem; }
th, td { border: 1px solid #ccc; padding: 0.25rem 0.6rem; text-align: right; white-space: nowrap; }
th, td:first-child, td.text { text-align: left; }
td.wrap { white-space: normal; min-width: 16rem; }
tr.total td { font-weight: bold; }
.bad { color: #a40000; } .ok { color: #1a7f37; } .muted { color: #777; }
"""


def _e(value: object) -> str:
    return html.escape("-" if value is None else str(value))


def _num(field: str, value: int, line: str) -> str:
    return f'<td data-field="{_e(field)}" data-line="{_e(line)}">{value}</td>'


def _reasons(counter: dict[str, int]) -> str:
    return ", ".join(f"{_e(k)} {v}" for k, v in sorted(counter.items())) or "-"


def _row(label: str, counts: Counts, *, css: str = "") -> str:
    cells = [
        _num("due", counts.due, label),
        _num("shared", counts.shared, label),
        _num("skipped", counts.skipped_total, label),
        _num("failed", counts.failed_total, label),
        _num("unknown", counts.unknown, label),
        _num("in_flight", counts.in_flight, label),
        _num("held", counts.held_total, label),
        _num("not_enqueued", counts.not_enqueued, label),
    ]
    parts = [
        f"{what}: {_reasons(c)}"
        for what, c in (("skipped", counts.skipped), ("failed", counts.failed), ("held", counts.held))
        if c
    ]
    why = "; ".join(parts) or "-"
    return f'<tr class="{css}"><td>{_e(label)}</td>{"".join(cells)}<td class="text wrap">{why}</td></tr>'


def _age(seconds: float | None) -> str:
    if seconds is None:
        return "never"
    if seconds < 120:
        return f"{seconds:.0f}s ago"
    if seconds < 7200:
        return f"{seconds / 60:.0f}m ago"
    return f"{seconds / 3600:.1f}h ago"


def _text(field: str, value: object, line: str, css: str = "") -> str:
    return f'<td class="text {css}" data-field="{_e(field)}" data-line="{_e(line)}">{_e(value)}</td>'


def _line_row(v: LineView) -> str:
    """One line's safety: its day, Linq's view, the controls, its pace, can it finish today."""
    cls = "bad" if v.held or not v.estimate.can_finish else "ok"
    finish = "nothing left" if v.remaining == 0 else v.finish_line().split(": ", 1)[-1]
    cells = [
        f"<td>{_e(v.phone)}</td>",
        _text("day", f"{v.day} {v.zone}", v.phone),
        _text("reputation", v.reputation or "HEALTHY", v.phone),
        _text("linq_status", v.linq_status or "ACTIVE", v.phone),
        _text("paused", v.paused or ("account" if v.account_paused else "no"), v.phone, "wrap"),
        _text("hours", v.hours or "all day", v.phone),
        _text("pace", v.pace_text(), v.phone),
        _text("held", v.held or "-", v.phone, f"wrap {cls}"),
        _num("remaining", v.remaining, v.phone),
        _text("finish", finish, v.phone, f"wrap {cls}"),
    ]
    return f"<tr>{''.join(cells)}</tr>"


def render(status: Status) -> str:
    """The whole page for one Status."""
    lines = "".join(_row(ln.line, ln.counts) for ln in status.lines)
    views = [ln.view for ln in status.lines if ln.view is not None]
    safety = "".join(_line_row(v) for v in views)
    account = (
        f'<p class="bad" data-field="account_paused">ACCOUNT PAUSED: {_e(status.account_paused)}</p>'
        if status.account_paused
        else ""
    )
    warns = "".join(
        f'<li class="bad" data-warning="{w.id}">#{w.id} {_e(w.kind)} ({_e(w.subject)}): {_e(w.summary)} '
        f"(since {_e((w.occurred_at or w.raised_at).isoformat(timespec='minutes'))}; "
        f"<code>cardshare warnings ack {w.id}</code> when handled)</li>"
        for w in status.warnings
    )
    warnings_html = f'<ul id="warnings">{warns}</ul>' if warns else ""
    total = _row("total", status.total, css="total")
    sweep = status.last_sweep
    if sweep is None:
        sweep_html = '<span class="bad">no sweep has run yet</span>'
    else:
        took = "still running" if sweep.seconds is None else f"took {sweep.seconds:.1f}s"
        err = f' <span class="bad">error: {_e(sweep.error)}</span>' if sweep.error else ""
        sweep_html = (
            f'<span data-field="last_sweep_at">{_e(sweep.started_at.isoformat(timespec="seconds"))}</span>, '
            f"{took}, scanned {sweep.scanned}, enqueued {sweep.enqueued}{err}"
        )
    if status.broker_error:
        broker_html = f'<span class="bad">{_e(status.broker_error)}</span>'
    else:
        broker_html = (
            f'<span data-field="queue_ready">{status.queue_ready}</span> waiting, '
            f'<span data-field="queue_unacked">{status.queue_unacked}</span> delivered and unacknowledged; '
            f'<span data-field="workers_live">{status.live_workers}</span> worker(s) live'
        )
    workers = "".join(
        f'<tr><td>{_e(w.node)}</td><td class="text {"ok" if w.live and not w.stalled else "bad"}">'
        f"{'live' if w.live else 'not seen'}{', stalled' if w.stalled else ''}</td>"
        f"<td>{_age(w.heartbeat_age_s)}</td>"
        f"<td>{_age(w.last_task_age_s)}</td><td>{w.completed}</td><td>{w.held}</td></tr>"
        for w in status.workers
    )
    if status.beat is None:
        beat_html = '<span class="bad">no heartbeat from beat</span>'
    else:
        b = status.beat
        sent = ", ".join(
            f"{_e(t.removeprefix('cardshare.'))} sent {_age(a)}" for t, a in b.sent_age_s.items()
        )
        beat_html = (
            f'<span class="{"ok" if b.live else "bad"}">{"alive" if b.live else "silent"}</span>, '
            f"heartbeat {_age(b.heartbeat_age_s)} (pid {b.pid} on {_e(b.host)}){'; ' + sent if sent else ''}"
        )
    failures = "".join(
        f'<tr data-chat="{_e(f.chat_id)}"><td class="text">{_e(f.at.isoformat(timespec="seconds"))}</td>'
        f'<td class="text">{_e(f.chat_id)}</td><td class="text">{_e(f.day)}</td>'
        f'<td class="text">{_e(f.line_phone)}</td><td class="text">{_e(f.status)}</td>'
        f'<td class="text wrap">{_e(f.reason)}</td><td>{_e(f.http_status)}</td>'
        f'<td>{_e(f.linq_code)}</td><td class="text">{_e(f.trace_id)}</td></tr>'
        for f in status.failures
    )
    latency_html = "".join(
        f"<p>First outbound &rarr; share accepted {_e(lat.day.isoformat())}: "
        f'<span data-field="first_outbound">{_e(first_outbound_line(lat))}</span></p>'
        for lat in status.first_outbound
    )
    no_failures = "" if status.failures else '<p class="muted">No failed or unknown chat-days.</p>'
    counted = (
        ""
        if status.counted_at is None
        else f'; chat-days counted at <span data-field="counted_at">'
        f"{_e(status.counted_at.isoformat(timespec='seconds'))}</span>"
    )
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta http-equiv="refresh" content="{REFRESH_S}">
<title>cardshare status {_e(status.day)}</title><style>{_STYLE}</style></head>
<body>
<h1>cardshare: <span data-field="day">{_e(status.day)}</span></h1>
<p class="muted">as of {_e(status.at.isoformat(timespec="seconds"))}{counted}; reloads every {REFRESH_S}s</p>
{account}{warnings_html}
<h2>Chat-days</h2>
<table id="days"><thead><tr><th>line</th><th>due</th><th>shared</th><th>skipped</th><th>failed</th>
<th>unknown</th><th>in flight</th><th>held</th><th>not enqueued</th><th>why</th></tr></thead>
<tbody>{lines}{total}</tbody></table>
<h2>Lines</h2>
<table id="lines"><thead><tr><th>line</th><th>day</th><th>reputation</th><th>status</th><th>paused</th>
<th>hours</th><th>pace</th><th>held</th><th>left today</th><th>today</th></tr></thead>
<tbody>{safety}</tbody></table>
<h2>Pipeline</h2>
{latency_html}<p>Last sweep: {sweep_html}</p>
<p>Queue: {broker_html}</p>
<p>Beat: {beat_html}</p>
<table id="workers"><thead><tr><th>worker</th><th>state</th><th>heartbeat</th><th>last task</th>
<th>finished</th><th>holding</th></tr></thead><tbody>{workers}</tbody></table>
<h2>Last failures</h2>
{no_failures}<table id="failures"><thead><tr><th>when</th><th>chat</th><th>day</th><th>line</th>
<th>status</th><th>reason</th><th>HTTP</th><th>Linq code</th><th>trace id</th></tr></thead>
<tbody>{failures}</tbody></table>
</body></html>
"""


def create_app(collect: Callable[[dt.date | None], Status]) -> Starlette:
    """GET / (the page), GET /status.json, GET /healthz. Nothing accepts writes."""
    # Starlette imported here: `cardshare status`, `history` and `check` load this module's
    # package without serving, and Starlette costs their start-up (tests/acceptance/test_startup.py).
    from starlette.applications import Starlette
    from starlette.concurrency import run_in_threadpool
    from starlette.responses import HTMLResponse, JSONResponse
    from starlette.routing import Route

    async def page(request: Request) -> Response:
        status = await run_in_threadpool(collect, None)
        return HTMLResponse(render(status))

    async def as_json(request: Request) -> Response:
        raw = request.query_params.get("day")
        try:
            day = dt.date.fromisoformat(raw) if raw else None
        except ValueError:
            return JSONResponse({"error": f"day {(raw or '')[:40]!r} is not YYYY-MM-DD"}, 400)
        if day is not None and not bounds.day_in_range(day):
            return JSONResponse(
                {"error": f"day {day} is out of range ({bounds.DAY_MIN} to {bounds.DAY_MAX})"}, 400
            )
        status = await run_in_threadpool(collect, day)
        return JSONResponse(status.as_dict())

    async def healthz(request: Request) -> Response:
        return JSONResponse({"ok": True})

    return Starlette(
        routes=[
            Route("/", page, methods=["GET"]),
            Route("/status.json", as_json, methods=["GET"]),
            Route("/healthz", healthz, methods=["GET"]),
        ]
    )
