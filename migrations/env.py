"""Alembic environment: URL from cardshare's config, metadata from worker.store.models."""

from __future__ import annotations

from alembic import context
from sqlalchemy import create_engine, pool, text

from worker.config import Settings
from worker.store.models import Base
from worker.store.partitions import is_partition_name

config = context.config
target_metadata = Base.metadata


def _url() -> str:
    url = config.attributes.get("url") or config.get_main_option("sqlalchemy.url")
    if not url:
        url = Settings.from_env().database_url
    if not url:
        raise SystemExit(
            "DATABASE_URL is not set (or run `cardshare db upgrade`, which starts embedded PostgreSQL)"
        )
    return str(url)


def include_name(name: str | None, type_: str, parent_names: object) -> bool:
    """The day partitions are the parents' business (`worker.store.partitions`), not the models'."""
    return not (type_ == "table" and name is not None and is_partition_name(name))


def run_migrations_offline() -> None:
    context.configure(
        url=_url(),
        target_metadata=target_metadata,
        literal_binds=True,
        compare_server_default=True,
        include_name=include_name,
    )
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online() -> None:
    engine = create_engine(_url(), poolclass=pool.NullPool)
    with engine.connect() as connection:
        # Two deployers at once: the second waits instead of racing (warehouse does the same).
        connection.execute(text("SELECT pg_advisory_lock(hashtext('cardshare-alembic'))"))
        connection.execute(text("SET lock_timeout = '10s'"))
        connection.commit()
        try:
            context.configure(
                connection=connection,
                target_metadata=target_metadata,
                compare_type=True,
                compare_server_default=True,
                include_name=include_name,
                transaction_per_migration=True,
            )
            with context.begin_transaction():
                context.run_migrations()
        finally:
            connection.execute(text("SELECT pg_advisory_unlock(hashtext('cardshare-alembic'))"))
            connection.commit()
    engine.dispose()


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
