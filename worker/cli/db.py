"""`cardshare db upgrade|check|maintain`: the schema and its day partitions."""

from __future__ import annotations

import sys

import click

from worker import migrate, runtime
from worker.cli.common import boot
from worker.config import mask_url
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
