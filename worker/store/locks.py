"""The advisory locks that keep two passes of a kind (sweep, recovery, release, sync,
maintenance) from walking the tables at once: session-level, so a dead holder's lock goes with
its connection."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

from worker.errors import StoreUnavailable
from worker.store.sql import Sql

if TYPE_CHECKING:
    from sqlalchemy import Engine

TRY_LOCK_SQL = Sql("SELECT pg_try_advisory_lock(:k)")
UNLOCK_SQL = Sql("SELECT pg_advisory_unlock(:k)")


@contextmanager
def advisory_lock(engine: Engine, key: int) -> Iterator[bool]:
    """Session-level lock on a dedicated connection: released on exit, or when we die."""
    try:
        conn = engine.connect()
    except Exception as exc:  # driver errors at connect time
        raise StoreUnavailable(f"database unavailable: {type(exc).__name__}") from exc
    try:
        got = bool(conn.execute(TRY_LOCK_SQL, {"k": key}).scalar())
        conn.commit()
        try:
            yield got
        finally:
            if got:
                conn.execute(UNLOCK_SQL, {"k": key})
                conn.commit()
    finally:
        conn.close()
