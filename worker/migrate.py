"""Run Alembic from cardshare: `cardshare db upgrade` and the `alembic check` used in tests."""

from __future__ import annotations

from importlib import resources
from pathlib import Path

from alembic import command
from alembic.config import Config

# The top-level migrations/ is installed as this package (setup.py maps it), so wheels, editable
# installs and a checkout all resolve it the same way: from the installed package.
MIGRATIONS_PACKAGE = "worker._migrations"


def migrations_dir() -> Path:
    try:
        root = resources.files(MIGRATIONS_PACKAGE)
    except ModuleNotFoundError:
        raise FileNotFoundError(f"{MIGRATIONS_PACKAGE} is not installed: reinstall cardshare") from None
    # Alembic reads the scripts from a directory: a zipped install would not do.
    if not isinstance(root, Path) or not (root / "env.py").is_file():
        raise FileNotFoundError(f"the Alembic migrations are missing from {root}: reinstall cardshare")
    return root


def alembic_config(url: str) -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(migrations_dir()))
    cfg.attributes["url"] = url
    return cfg


def upgrade(url: str, revision: str = "head") -> None:
    command.upgrade(alembic_config(url), revision)


def check(url: str) -> None:
    """Raise if the models and the migrations disagree."""
    command.check(alembic_config(url))


def current(url: str) -> str | None:
    from alembic.runtime.migration import MigrationContext
    from sqlalchemy import create_engine, pool

    engine = create_engine(url, poolclass=pool.NullPool)
    try:
        with engine.connect() as conn:
            rev = MigrationContext.configure(conn).get_current_revision()
            return str(rev) if rev is not None else None
    finally:
        engine.dispose()
