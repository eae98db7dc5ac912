"""Operations commands: `cardshare count`, `health`, `web` (`status`, `history` and `check` are
`worker.cli.reads`).

The work happens in `worker.ops` (status, check, health, the status page); `health` itself is
`worker.ops.healthcheck`, light enough for a container healthcheck.
"""

from __future__ import annotations

import datetime as dt

import click

from worker import runtime
from worker.cli.common import boot, retention_note
from worker.errors import InputError
from worker.http_server import address, bind, serve
from worker.ops import count_pass, status_page
from worker.ops import status as status_mod
from worker.ops.counts_cache import CountsCache
from worker.ops.healthcheck import health
from worker.ops.status import Status


def register(cli: click.Group) -> None:
    """Add the operations commands to the `cardshare` group."""
    cli.add_command(count)
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
