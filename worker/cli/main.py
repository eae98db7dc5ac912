"""The `cardshare` command group. One-line errors, non-zero exits; the work happens elsewhere.

Each command group lives in its own module and registers itself here; none of them imports
this module, so there is no circle.
"""

from __future__ import annotations

import click

from worker.cli import cards, db, dev, ingest, lines, ops, reads, run, share
from worker.cli.common import CONTEXT
from worker.cli.common import run as run_group


@click.group(context_settings=CONTEXT)
@click.version_option(package_name="cardshare")
def cli() -> None:
    """Share each line's iMessage contact card into its chats, once a day."""


db.register(cli)  # db upgrade|check
share.register(cli)  # share, sweep, recover
run.register(cli)  # worker, beat
dev.register(cli)  # simulator, demo
cards.register(cli)  # card list|create|update, contacts
ingest.register(cli)  # webhooks, sync, import
ops.register(cli)  # count, health, web
reads.register(cli)  # status, history, check
lines.register(cli)  # line list|pause|resume|set, warnings list|ack


def main(argv: list[str] | None = None) -> None:
    """Entry point: every CardshareError becomes one line and its exit code."""
    run_group(cli, argv)
