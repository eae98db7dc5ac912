"""`cardshare db upgrade|check|maintain|wait`: the schema and its day partitions."""

from __future__ import annotations

import sys

import click

from worker import bootstrap, migrate, runtime
from worker.cli.common import boot, load_settings
from worker.config import mask_url
from worker.errors import InputError
from worker.ops.retention import run_maintenance


def register(cli: click.Group) -> None:
    cli.add_command(db)


@click.group()
def db() -> None:
    """Database schema."""


@db.command("upgrade")
def db_upgrade() -> None:
    """Apply migrations up to the newest."""
    # No broker: a migration needs DATABASE_URL alone (the migrate Job gets nothing else).
    with boot(auto_migrate=True, broker=False) as b:
        click.echo(f"schema is current on {mask_url(b.settings.database_url or '')}")


@db.command("check")
def db_check() -> None:
    """Fail unless the models and the migrations agree (alembic check)."""
    with boot(auto_migrate=False, broker=False) as b:
        assert b.settings.database_url
        migrate.check(b.settings.database_url)
        click.echo("models and migrations agree")


@db.command("maintain")
def db_maintain() -> None:
    """Create the coming days' partitions, drop the days past retention (beat does this hourly)."""
    with boot(broker=False):  # PostgreSQL only, like upgrade and check
        rt = runtime.get()
        report = run_maintenance(rt.deps, rt.engine)
    click.echo(report.one_line())
    if report.errors:
        sys.exit(1)


@db.command("wait")
@click.option(
    "--timeout",
    "timeout_s",
    type=click.FloatRange(min=0),
    default=300.0,
    show_default=True,
    help="Give up after this many seconds.",
)
def db_wait(timeout_s: float) -> None:
    """Wait until PostgreSQL answers and the schema is current (a Kubernetes init container:
    pods wait for the migrate Job instead of crash-looping). Each new reason to wait goes to
    stderr; on timeout, non-zero with the last one."""
    settings = load_settings()
    if settings.database_url is None:
        raise InputError("db wait waits for a real server: set DATABASE_URL (or DATABASE_URL_FILE)")
    head = bootstrap.wait_for_schema(
        settings.database_url,
        timeout_s=timeout_s,
        waiting=lambda reason: click.echo(f"cardshare: waiting: {reason}", err=True),
    )
    click.echo(f"schema is at {head} on {mask_url(settings.database_url)}")
