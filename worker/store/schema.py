"""Which revision of the migrations the database is at: one query, no Alembic (the schema check
every command makes before it starts, `bootstrap.ensure_schema`)."""

from __future__ import annotations

from worker.store.sql import Reader, Sql

HAS_VERSION_TABLE_SQL = Sql("SELECT to_regclass('alembic_version') IS NOT NULL")
SCHEMA_REVISION_SQL = Sql("SELECT version_num FROM alembic_version")


def revision(db: Reader) -> str | None:
    """The revision (None: never migrated); several heads joined by commas, sorted."""
    if not db.execute(HAS_VERSION_TABLE_SQL).scalar():
        return None
    rows = db.execute(SCHEMA_REVISION_SQL).scalars().all()
    return ",".join(sorted(str(r) for r in rows)) or None
