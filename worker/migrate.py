"""Run Alembic from cardshare: `cardshare db upgrade`, `alembic check`, and the head revision that
every other command compares the database with.

Alembic is imported inside the functions that run it: importing it (and building its
ScriptDirectory, which imports every migration file) cost 0.15-0.3 s of a command's start on
the 2-core box, and only `db upgrade`, `db check` and the embedded servers need it.
"""

from __future__ import annotations

import functools
import re
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING

from worker.errors import SchemaOutOfDate

if TYPE_CHECKING:
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


# A revision file's own id and its parent(s), as Alembic's template writes them.
_REVISION = re.compile(r"^revision(?::[^=]*)?=\s*['\"]([^'\"]+)['\"]", re.MULTILINE)
_DOWN = re.compile(r"^down_revision(?::[^=]*)?=\s*(.+)$", re.MULTILINE)
_QUOTED = re.compile(r"['\"]([^'\"]+)['\"]")


@functools.cache
def head_revision() -> str:
    """The newest revision, read from the files' `revision` and `down_revision` lines without
    importing them (a test checks it against Alembic's own ScriptDirectory)."""
    revisions: set[str] = set()
    parents: set[str] = set()
    for path in sorted((migrations_dir() / "versions").glob("*.py")):
        source = path.read_text()
        found = _REVISION.search(source)
        if found is None:
            continue
        revisions.add(found.group(1))
        down = _DOWN.search(source)
        if down is not None:
            parents.update(_QUOTED.findall(down.group(1)))
    heads = sorted(revisions - parents)
    if len(heads) != 1:
        raise RuntimeError(f"the migrations have {len(heads)} heads ({', '.join(heads)}): merge them")
    return heads[0]


def ensure_revision(current: str | None) -> None:
    """SchemaOutOfDate unless the database's revision (`store.schema.revision`) is the head."""
    head = head_revision()
    if current != head:
        raise SchemaOutOfDate(
            f"database schema is at {current or 'nothing'}, this cardshare needs {head}: "
            "run `cardshare db upgrade`"
        )


def alembic_config(url: str) -> Config:
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(migrations_dir()))
    cfg.attributes["url"] = url
    return cfg


def upgrade(url: str, revision: str = "head") -> None:
    from alembic import command

    command.upgrade(alembic_config(url), revision)


def check(url: str) -> None:
    """Raise if the models and the migrations disagree."""
    from alembic import command

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
