"""The `cardshare` command group. One-line errors, non-zero exits; the work happens elsewhere.

Each command group lives in its own module and registers itself here; none of them imports
this module, so there is no circle.
"""

from __future__ import annotations

import os
import sys
import traceback

import click

from worker.cli import cards, db, dev, ingest, ops, run, share
from worker.cli.common import fail, safe
from worker.errors import CardshareError, StoreUnavailable
from worker.logs import redact
from worker.rules import bounds


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="cardshare")
def cli() -> None:
    """Share each line's iMessage contact card into its chats, once a day."""


db.register(cli)  # db upgrade|check
share.register(cli)  # share, sweep, recover
run.register(cli)  # worker, beat
dev.register(cli)  # simulator, demo
cards.register(cli)  # card list|create|update, contacts
ingest.register(cli)  # webhooks, sync, import
ops.register(cli)  # status, history, check, health, web


def main(argv: list[str] | None = None) -> None:
    """Entry point: every CardshareError becomes one line and its exit code; so does anything
    else (a bug), with a hint to rerun at DEBUG for the traceback."""
    try:
        _main(argv)
    except SystemExit:
        raise
    except Exception as exc:
        debug = os.environ.get("CARDSHARE_LOG_LEVEL", "").strip().upper() == "DEBUG"
        if debug:
            traceback.print_exc(file=sys.stderr)
        what = redact(safe(bounds.clean_text(str(exc), 200) or ""))
        hint = "" if debug else "; rerun with CARDSHARE_LOG_LEVEL=DEBUG for the traceback"
        fail(f"unexpected error: {type(exc).__name__}: {what}{hint}", 1)


def _main(argv: list[str] | None) -> None:
    try:
        cli.main(args=argv, prog_name="cardshare", standalone_mode=False)
    except click.exceptions.Abort:
        fail("aborted", 130)
    except click.exceptions.UsageError as exc:
        # One line, like every other refusal: which input and why.
        where = exc.ctx.command_path if exc.ctx is not None else "cardshare"
        click.echo(f"{where}: {safe(exc.format_message())} (see '{where} --help')", err=True)
        sys.exit(exc.exit_code)
    except click.exceptions.ClickException as exc:
        exc.show()
        sys.exit(exc.exit_code)
    except StoreUnavailable as exc:
        fail(str(exc), exc.exit_code)
    except CardshareError as exc:
        fail(str(exc), exc.exit_code)
    except KeyboardInterrupt:
        fail("interrupted", 130)
