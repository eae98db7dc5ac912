"""What every command group shares: booting, one-line failures, and parsing and printing helpers.

Command modules import this and the packages that do the work, never `main` or each other.
"""

from __future__ import annotations

import datetime as dt
import os
import re
import sys
import traceback
import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, NoReturn

import click

from worker import migrate
from worker.config import Settings
from worker.deps import utcnow
from worker.errors import BrokerUnavailable, CardshareError, InputError, StoreUnavailable
from worker.logs import configure as configure_logging
from worker.logs import redact, register_secret
from worker.rules import bounds
from worker.rules.cadence import share_day
from worker.rules.retention import past_retention, past_retention_message
from worker.store import schema
from worker.store.plain import PlainDatabase

if TYPE_CHECKING:
    from sqlalchemy.orm import Session, sessionmaker

    from worker.bootstrap import Booted

# Terminal control: C0 controls but tab and newline (ESC starts every escape sequence), DEL, C1
# controls (CSI, OSC ...), and the invisible format characters that reorder text (bidi).
_UNSAFE = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u061c\u200b-\u200f\u202a-\u202e\u2066-\u2069\ufeff]")


def safe(text: object) -> str:
    """Text from the database or Linq, made safe to print: control and bidi characters shown as
    escapes (`\x1b`), so stored text can neither drive the terminal nor disguise itself."""
    return _UNSAFE.sub(
        lambda m: f"\\x{ord(m.group()):02x}" if ord(m.group()) < 0x100 else f"\\u{ord(m.group()):04x}",
        str(text),
    )


def fail(message: str, code: int = 1) -> NoReturn:
    click.echo(f"cardshare: {message}", err=True)
    sys.exit(code)


CONTEXT = {"help_option_names": ["-h", "--help"]}


def group_of(register: Callable[[click.Group], None]) -> click.Group:
    """A `cardshare` group holding one command module's commands (`worker.entry` runs a command
    this way without importing every other command module)."""
    group = click.Group("cardshare", context_settings=CONTEXT)
    register(group)
    return group


def run(group: click.Group, argv: Sequence[str] | None = None) -> None:
    """Run a `cardshare` group: every CardshareError becomes one line and its exit code; so does
    anything else (a bug), with a hint to rerun at DEBUG for the traceback."""
    try:
        _run(group, argv)
    except SystemExit:
        raise
    except Exception as exc:
        debug = os.environ.get("CARDSHARE_LOG_LEVEL", "").strip().upper() == "DEBUG"
        if debug:
            traceback.print_exc(file=sys.stderr)
        what = redact(safe(bounds.clean_text(str(exc), 200) or ""))
        hint = "" if debug else "; rerun with CARDSHARE_LOG_LEVEL=DEBUG for the traceback"
        fail(f"unexpected error: {type(exc).__name__}: {what}{hint}", 1)


def _run(group: click.Group, argv: Sequence[str] | None) -> None:
    try:
        group.main(args=argv, prog_name="cardshare", standalone_mode=False)
    except click.exceptions.Abort:
        fail("aborted", 130)
    except click.exceptions.UsageError as exc:
        # One line, like every other refusal: which input and why.
        where = exc.ctx.command_path if exc.ctx is not None else "cardshare"
        click.echo(f"{where}: {safe(exc.format_message())} (see '{where} --help')", err=True)
        sys.exit(exc.exit_code)
    except click.exceptions.ClickException as exc:
        exc.show()
        sys.exit(exc.exit_code)
    except StoreUnavailable as exc:
        fail(str(exc), exc.exit_code)
    except CardshareError as exc:
        fail(str(exc), exc.exit_code)
    except KeyboardInterrupt:
        fail("interrupted", 130)


def load_settings() -> Settings:
    """This process's settings (read once: pass them on to `boot`); a bad one ends the command."""
    try:
        return Settings.from_env()  # the one place a `cardshare` command reads its environment
    except CardshareError as exc:
        fail(str(exc), exc.exit_code)


def _quiet_logging(settings: Settings) -> None:
    configure_logging(settings.log_level if settings.log_level != "INFO" else "WARNING", settings.log_format)


@contextmanager
def boot(settings: Settings | None = None, **kw: Any) -> Iterator[Booted]:
    """Resolve the servers (embedded ones started if needed) and install the runtime for the block."""
    # Here, not at the top: bootstrap brings SQLAlchemy (~0.45 s to import on the 2-core box),
    # which `status` and `history` against running servers skip (`read_boot`).
    from worker.bootstrap import resolve

    settings = settings or load_settings()
    _quiet_logging(settings)
    b = resolve(settings, **kw)
    try:
        yield b
    finally:
        b.close()


@contextmanager
def read_boot(
    settings: Settings | None = None,
) -> Iterator[tuple[Settings, sessionmaker[Session] | PlainDatabase]]:
    """For a command that only reads the database, then Redis (`status`, `history`): its settings
    and where to read. With both servers' URLs set, one psycopg connection and no SQLAlchemy,
    Celery or httpx (the first query comes ~0.5 s sooner on the 2-core box: bench/README.md §6);
    with an embedded server to start, the full boot (which takes seconds anyway)."""
    settings = settings or load_settings()
    if not running_servers(settings):
        with boot(settings) as b:
            yield b.settings, b.sessions()
        return
    with plain_boot(settings) as db:
        yield settings, db


def running_servers(settings: Settings) -> bool:
    """Both servers' URLs are set: nothing embedded to start, so a short command may take the
    plain path (`plain_boot`)."""
    return settings.database_url is not None and settings.redis_url is not None


@contextmanager
def plain_boot(settings: Settings) -> Iterator[PlainDatabase]:
    """For a short command against running servers (`status`, `history`, `check`, `share`,
    `recover`): one psycopg connection, the schema's revision checked. No SQLAlchemy."""
    assert settings.database_url is not None
    _quiet_logging(settings)
    register_secret(settings.linq_api_key.get())
    db = PlainDatabase(settings.database_url)
    try:
        with db.read_only() as conn:
            migrate.ensure_revision(schema.revision(conn))
        yield db
    finally:
        db.close()


def retention_note(settings: Settings, day: dt.date | None, now: dt.datetime | None = None) -> str | None:
    """What is said of a day older than CARDSHARE_RETENTION_DAYS (None for a kept day)."""
    if day is None:
        return None
    today = share_day(now or utcnow(), settings.zone)
    if past_retention(day, today, settings.retention_days):
        return past_retention_message(day, today, settings.retention_days)
    return None


def refuse_past_retention(settings: Settings, day: dt.date | None) -> None:
    """A day older than CARDSHARE_RETENTION_DAYS has no rows left to report on: say so (exit 2)."""
    note = retention_note(settings, day)
    if note is not None:
        raise InputError(f"--day {note}")


@contextmanager
def broker_errors(redis_url: str | None) -> Iterator[None]:
    """Redis down (or refusing us) becomes one line naming it, without its password."""
    try:
        yield
    except Exception as exc:
        if not _broker_error(exc):
            raise
        where = bounds.mask_url(redis_url or "the broker")
        raise BrokerUnavailable(
            f"Redis at {where} is unavailable ({type(exc).__name__}); nothing was enqueued, try again later"
        ) from None


def _broker_error(exc: Exception) -> bool:
    """redis-py's and kombu's errors, looked up only if the command loaded them (a command that
    published nothing has not imported kombu, so none of its errors can have been raised)."""
    if isinstance(exc, ConnectionError):
        return True
    redis_errors = sys.modules.get("redis.exceptions")
    if redis_errors is not None and isinstance(exc, redis_errors.RedisError):
        return True
    kombu_errors = sys.modules.get("kombu.exceptions")
    return kombu_errors is not None and isinstance(exc, kombu_errors.OperationalError)


def parse_chat_id(raw: str) -> uuid.UUID:
    try:
        return uuid.UUID(raw.strip())
    except ValueError:
        raise InputError(f"chat id {safe(raw[:80])!r} is malformed: Linq chat ids are UUIDs") from None


def parse_day(raw: str | None) -> dt.date | None:
    """`--day YYYY-MM-DD`, or None when not given."""
    if raw is None:
        return None
    try:
        day = dt.date.fromisoformat(raw.strip())
    except ValueError:
        raise InputError(f"--day {safe(raw)!r} is not a date (YYYY-MM-DD)") from None
    if not bounds.day_in_range(day):
        raise InputError(f"--day {day} is out of range ({bounds.DAY_MIN} to {bounds.DAY_MAX})")
    return day


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
    return safe(" ".join(str(value).split()))  # a newline in a name must not break the table


def ago(seconds: float | None) -> str:
    if seconds is None:
        return "never"
    if seconds < 120:
        return f"{seconds:.0f}s ago"
    if seconds < 7200:
        return f"{seconds / 60:.0f}m ago"
    return f"{seconds / 3600:.1f}h ago"
