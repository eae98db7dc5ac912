"""The revisions, installed as `worker._migrations.versions` (Alembic skips this file)."""
