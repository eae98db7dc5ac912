"""The ingestion commands: `cardshare webhooks`, `cardshare sync`, `cardshare import FILE`.

The work happens in `worker.ingest` (webhooks, sync, importer).
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import cast

import click
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    SpinnerColumn,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
)

from worker import runtime
from worker.cli.common import boot, load_settings, safe
from worker.deps import Deps
from worker.errors import InputError
from worker.http_server import bind, serve
from worker.ingest import importer
from worker.ingest import webhooks as receiver
from worker.ingest.payloads import E164
from worker.ingest.sync import SyncProgress, run_sync
from worker.keys import CONTROL_QUEUE, REFRESH_CARD_TASK
from worker.logs import configure as configure_logging
from worker.ops import observability
from worker.queue.app import app as celery
from worker.queue.publish import event_path
from worker.store.audit import audit
from worker.store.session import transaction


def register(cli: click.Group) -> None:
    """Add the ingestion commands to the `cardshare` group."""
    cli.add_command(webhooks)
    cli.add_command(sync)
    cli.add_command(import_chats)


@click.command()
@click.option("--host", default=None, help="Address to listen on (default CARDSHARE_WEBHOOK_HOST).")
@click.option(
    "--port",
    type=click.IntRange(0, 65535),
    default=None,
    help="Port (default CARDSHARE_WEBHOOK_PORT; 0 picks a free one).",
)
def webhooks(host: str | None, port: int | None) -> None:
    """Receive Linq's signed webhooks at POST /webhooks/linq until stopped."""
    settings = load_settings()
    receiver.verifier_for(settings)  # a missing or bad secret stops us before anything starts
    with boot(settings, watch=True) as b:
        settings = b.settings
        # The receiver's own lines (rejections, outages) are the point of running it: log at INFO.
        configure_logging(settings.log_level, settings.log_format)
        observability.setup(settings, "webhooks")
        observability.announce(settings, "webhooks")
        rt = runtime.get()
        app = receiver.create_app(
            settings, rt.sessions, refresh_card=_refresh_card, first_outbound=event_path(celery, rt.deps)
        )
        where = (host or settings.webhook_host, settings.webhook_port if port is None else port)
        try:
            sock = bind(*where)
        except OSError as exc:
            raise InputError(f"cannot listen on {where[0]}:{where[1]}: {exc.strerror or exc}") from None
        click.echo(f"receiving Linq webhooks at {receiver.url_of(sock)}")
        serve(app, sock, header_timeout_s=settings.webhook_header_timeout_s)


def _refresh_card(line: str) -> None:
    """A contact_card.* event: a worker re-reads that line's card (the control queue)."""
    # retry=False: a broker that is down answers at once; the receiver then asks Linq to retry.
    celery.send_task(REFRESH_CARD_TASK, args=(line,), queue=CONTROL_QUEUE, retry=False)


@click.command()
@click.option("--line", "lines", multiple=True, help="Only this line (E.164); repeat for several.")
@click.option(
    "--lookups",
    type=click.IntRange(min=0),
    default=None,
    help="Message pages to read at most (default CARDSHARE_SYNC_MESSAGE_LOOKUPS).",
)
def sync(lines: tuple[str, ...], lookups: int | None) -> None:
    """Read every line's chats from Linq and look for outbound messages where none is known."""
    lines = tuple(line.strip() for line in lines)  # a pasted "+1...\n" is still that line
    for line in lines:
        if not E164.fullmatch(line):
            raise InputError(f"line {safe(line[:40])!r} is not an E.164 phone number (+ and digits)")
    with boot():
        rt = runtime.get()
        with _progress() as progress:
            report = run_sync(
                rt.deps,
                rt.engine,
                lines=lines or None,
                lookups=lookups,
                progress=progress,
                first_outbound=event_path(celery, rt.deps),
            )
        click.echo(report.one_line())
        if not report.ran or report.errors:
            sys.exit(1)


@click.command("import")
@click.argument("file", type=click.Path(path_type=Path, dir_okay=False))
@click.option(
    "--format", "fmt", type=click.Choice(["csv", "jsonl"]), default=None, help="Default: by extension."
)
def import_chats(file: Path, fmt: str | None) -> None:
    """Record chats and their last outbound time from a CSV or JSON Lines FILE (idempotent).

    Columns: chat_id, line, service, last_outbound_at, and optionally is_group. Each bad row is
    reported with its line number and skipped; the exit code is 1 if any row was bad.
    """
    if not file.is_file():
        raise InputError(f"cannot read {file}: no such file")
    with boot():
        deps = runtime.get().deps
        try:
            report = importer.import_file(
                file,
                deps.sessions,
                now=deps.clock(),
                fmt=cast("importer.Format | None", fmt),
                on_bad_row=lambda bad: click.echo(f"cardshare: {safe(bad.one_line(str(file)))}", err=True),
                first_outbound=event_path(celery, deps),
            )
        except InputError as exc:
            _audit_import(deps, "refused", f"{file.name}: {exc}")
            raise InputError(f"{file}: {exc}") from None
        _audit_import(deps, "partial" if report.bad_count else "imported", report.one_line())
        click.echo(report.one_line())
        if report.bad_count:
            sys.exit(1)


def _audit_import(deps: Deps, outcome: str, detail: str) -> None:
    with transaction(deps.sessions) as session:
        audit(session, actor="cli", action="import", chat_ref=None, outcome=outcome, detail=detail[:500])


class _Bar(SyncProgress):
    """The sync's progress on a terminal: chats listed (no known total), then message lookups."""

    def __init__(self, bar: Progress) -> None:
        self.bar = bar
        self.listing = bar.add_task("chats", total=None)
        self.looking: TaskID | None = None

    def line(self, phone: str) -> None:
        self.bar.update(self.listing, description=f"chats of {phone}")

    def chats(self, count: int) -> None:
        self.bar.advance(self.listing, count)

    def lookups(self, total: int) -> None:
        self.bar.update(self.listing, description="chats", total=self.bar.tasks[0].completed)
        self.looking = self.bar.add_task("message lookups", total=total)

    def lookup(self) -> None:
        if self.looking is not None:
            self.bar.advance(self.looking)


@contextmanager
def _progress() -> Iterator[SyncProgress]:
    if not sys.stderr.isatty():
        yield SyncProgress()
        return
    columns = (SpinnerColumn(), TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn())
    with Progress(*columns, TimeElapsedColumn(), console=Console(stderr=True), transient=True) as bar:
        yield _Bar(bar)
