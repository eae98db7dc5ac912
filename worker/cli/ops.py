"""Operations commands: `cardshare count`, `check`, `health`, `web` (`status` and `history` are
`worker.cli.reads`).

The work happens in `worker.ops` (status, check, health, the status page); `health` itself is
`worker.ops.healthcheck`, light enough for a container healthcheck.
"""

from __future__ import annotations

import datetime as dt
import json
import sys

import click

from worker import runtime
from worker.cli.common import boot, parse_day, refuse_past_retention, retention_note, safe
from worker.errors import CardshareError, InputError
from worker.http_server import address, bind, serve
from worker.ops import count_pass, status_page
from worker.ops import status as status_mod
from worker.ops.check import run_check
from worker.ops.counts_cache import CountsCache
from worker.ops.healthcheck import health
from worker.ops.status import Status
from worker.rules.cadence import share_day


def register(cli: click.Group) -> None:
    """Add the operations commands to the `cardshare` group."""
    cli.add_command(count)
    cli.add_command(check)
    cli.add_command(health)
    cli.add_command(web)


# --------------------------------------------------------------------------- count


@click.command()
def count() -> None:
    """Count today's chat-days now and save them for `status` and the page (beat's count pass,
    every CARDSHARE_STATUS_COUNTS_INTERVAL seconds)."""
    with boot(broker=False):  # PostgreSQL only
        report = count_pass.count_today(runtime.get().deps)
    click.echo(report.one_line())


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
            deps = runtime.get().deps
            st = status_mod.collect_for(
                deps.sessions, b.settings, day, now=deps.clock(), counts_reader=counts
            )
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
