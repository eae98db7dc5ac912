"""What every command group shares: booting, one-line failures, and parsing and printing helpers.

Command modules import this and the packages that do the work, never `main` or each other.
"""

from __future__ import annotations

import datetime as dt
import sys
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any, NoReturn

import click

from worker import bootstrap, runtime
from worker.bootstrap import Booted
from worker.config import Settings
from worker.errors import CardshareError, InputError
from worker.logs import configure as configure_logging
from worker.ops import status as status_mod
from worker.ops.status import Status


def fail(message: str, code: int = 1) -> NoReturn:
    click.echo(f"cardshare: {message}", err=True)
    sys.exit(code)


def load_settings() -> Settings:
    """This process's settings (read once: pass them on to `boot`); a bad one ends the command."""
    try:
        return bootstrap.load_settings()
    except CardshareError as exc:
        fail(str(exc), exc.exit_code)


@contextmanager
def boot(settings: Settings | None = None, **kw: Any) -> Iterator[Booted]:
    """Resolve the servers (embedded ones started if needed) and install the runtime for the block."""
    settings = settings or load_settings()
    configure_logging(settings.log_level if settings.log_level != "INFO" else "WARNING", settings.log_format)
    b = bootstrap.resolve(settings, **kw)
    try:
        yield b
    finally:
        b.close()


def collect_status(settings: Settings, day: dt.date | None) -> Status:
    """`status`, `line list` and the status page read the same numbers."""
    deps = runtime.get().deps
    return status_mod.collect(
        deps.sessions,
        day=day,
        now=deps.clock(),
        policy=deps.policy,
        redis_url=settings.redis_url,
        stall_s=settings.health_stall_minutes * 60,
        pace=deps.pace,
    )


def parse_chat_id(raw: str) -> uuid.UUID:
    try:
        return uuid.UUID(raw.strip())
    except ValueError:
        raise InputError(f"chat id {raw!r} is malformed: Linq chat ids are UUIDs") from None


def parse_day(raw: str | None) -> dt.date | None:
    """`--day YYYY-MM-DD`, or None when not given."""
    if raw is None:
        return None
    try:
        return dt.date.fromisoformat(raw)
    except ValueError:
        raise InputError(f"--day {raw!r} is not a date (YYYY-MM-DD)") from None


def render_table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    """A plain left-aligned table: stable for pipes and greps, whatever the terminal width."""
    cells = [[_cell(v) for v in row] for row in rows]
    widths = [max([len(h), *(len(r[i]) for r in cells)]) for i, h in enumerate(headers)]
    lines = [headers, ["-" * w for w in widths], *cells]
    return "\n".join(
        "  ".join(c.ljust(w) for c, w in zip(line, widths, strict=True)).rstrip() for line in lines
    )


def _cell(value: object) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    return " ".join(str(value).split())  # a newline in a name must not break the table


def ago(seconds: float | None) -> str:
    if seconds is None:
        return "never"
    if seconds < 120:
        return f"{seconds:.0f}s ago"
    if seconds < 7200:
        return f"{seconds / 60:.0f}m ago"
    return f"{seconds / 3600:.1f}h ago"
