"""cardshare's Alembic migrations, installed as the package `worker._migrations` (see setup.py)."""
