"""Models and migrations agree, and the migration goes down and up cleanly."""

from __future__ import annotations

from alembic import command

from worker import migrate


def test_alembic_check_passes(database_url: str) -> None:
    migrate.check(database_url)


def test_downgrade_and_upgrade_round_trip(database_url: str) -> None:
    cfg = migrate.alembic_config(database_url)
    command.downgrade(cfg, "base")
    assert migrate.current(database_url) is None
    command.upgrade(cfg, "head")
    migrate.check(database_url)
