"""The `cardshare` command. One-line errors, non-zero exits; the work happens elsewhere."""

from __future__ import annotations

import datetime as dt
import sys
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, NoReturn

import click

from worker.bootstrap import Booted, resolve
from worker.config import Settings, mask_url
from worker.errors import CardshareError, InputError, StoreUnavailable, UnknownChat
from worker.logs import configure as configure_logging
from worker.store.audit import audit
from worker.store.session import transaction
from worker.store.shares import load_chat


def fail(message: str, code: int = 1) -> NoReturn:
    click.echo(f"cardshare: {message}", err=True)
    sys.exit(code)


def load_settings() -> Settings:
    try:
        return Settings.from_env()
    except CardshareError as exc:
        fail(str(exc), exc.exit_code)


@contextmanager
def boot(**kw: Any) -> Iterator[Booted]:
    settings = load_settings()
    configure_logging(settings.log_level if settings.log_level != "INFO" else "WARNING", settings.log_format)
    b = resolve(settings, **kw)
    try:
        yield b
    finally:
        b.close()


def parse_chat_id(raw: str) -> uuid.UUID:
    try:
        return uuid.UUID(raw.strip())
    except ValueError:
        raise InputError(f"chat id {raw!r} is malformed: Linq chat ids are UUIDs") from None


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="cardshare")
def cli() -> None:
    """Share each line's iMessage contact card into its chats, once a day."""


# --------------------------------------------------------------------------- db


@cli.group()
def db() -> None:
    """Database schema."""


@db.command("upgrade")
def db_upgrade() -> None:
    """Apply migrations up to the newest."""
    with boot(auto_migrate=True) as b:
        click.echo(f"schema is current on {mask_url(b.settings.database_url or '')}")


@db.command("check")
def db_check() -> None:
    """Fail unless the models and the migrations agree (alembic check)."""
    from worker import migrate

    with boot(auto_migrate=False) as b:
        assert b.settings.database_url
        migrate.check(b.settings.database_url)
        click.echo("models and migrations agree")


# --------------------------------------------------------------------------- share


@cli.command()
@click.argument("chat_id")
@click.option("--wait", is_flag=True, help="Run the share here and print its outcome.")
def share(chat_id: str, wait: bool) -> None:
    """Share the card into CHAT_ID today (same once-a-day rules as the sweep)."""
    from worker import runtime, service
    from worker.rules.cadence import share_day, why_not_due

    with boot() as b:
        deps = runtime.get().deps
        try:
            cid = parse_chat_id(chat_id)
        except InputError as exc:
            with transaction(deps.sessions) as s:
                audit(
                    s, actor="cli", action="share", chat_ref=chat_id[:100], outcome="refused", detail=str(exc)
                )
            raise
        now = deps.clock()
        day = share_day(now, b.settings.zone)
        with transaction(deps.sessions) as s:
            chat = load_chat(s, cid, day)
            refusal: str | None = None
            if chat is None:
                refusal = f"chat {cid} is unknown to cardshare (no webhook, sync or import has recorded it)"
            else:
                why = why_not_due(
                    chat.facts,
                    now=now,
                    policy=deps.policy,
                    shared_today=chat.shared_today,
                    day_closed=chat.day_closed,
                )
                if why is not None:
                    refusal = f"chat {cid} is not due on {day}: {service.explain(why)}"
            audit(
                s,
                actor="cli",
                action="share",
                chat_ref=str(cid),
                outcome="refused" if refusal else ("run" if wait else "enqueued"),
                detail=refusal,
            )
        if refusal:
            if chat is None:
                raise UnknownChat(refusal)
            fail(refusal)
        if wait:
            result = service.share_chat(cid, day, deps, task_id=None)
            click.echo(result.one_line())
            if result.outcome not in (service.Outcome.SHARED, service.Outcome.CONFIRMED):
                sys.exit(1)
            return
        from worker.tasks import share_chat as share_task

        sent = share_task.apply_async(args=(str(cid), day.isoformat()))
        click.echo(f"enqueued chat {cid} for {day} (task {sent.id}); a worker will share it")


# --------------------------------------------------------------------------- sweep / recover


@cli.command()
def sweep() -> None:
    """Run one sweep now: refresh cards, enqueue every due chat."""
    _run_pass("sweep")


@cli.command()
def recover() -> None:
    """Re-enqueue chat-days whose lease ran out (beat runs this every minute)."""
    _run_pass("recover")


def _run_pass(kind: str) -> None:
    with boot():
        from worker.tasks import _pass

        report = _pass(kind)
        click.echo(report.one_line())


# --------------------------------------------------------------------------- check


@cli.command()
@click.option("--day", "day_text", default=None, help="YYYY-MM-DD in CARDSHARE_TIMEZONE (default today).")
@click.option(
    "--simulator",
    "sim_url",
    default=None,
    help="Base URL of a Linq simulator whose share log makes duplicate counts exact.",
)
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def check(day_text: str | None, sim_url: str | None, as_json: bool) -> None:
    """Was every due chat-day shared exactly once? Exit 1 if any was missed or duplicated."""
    import json as _json

    from worker import runtime
    from worker.check import run_check
    from worker.simulator import SimulatorAdmin

    with boot() as b:
        try:
            day = dt.date.fromisoformat(day_text) if day_text else _today(b.settings)
        except ValueError:
            raise InputError(f"--day {day_text!r} is not a date (YYYY-MM-DD)") from None
        events = None
        if sim_url:
            with SimulatorAdmin(sim_url) as admin:
                events = admin.share_events()
        deps = runtime.get().deps
        with deps.sessions() as s:
            report = run_check(s, day, deps.policy, now=dt.datetime.now(dt.UTC), share_events=events)
        if as_json:
            click.echo(_json.dumps(report.as_dict(), indent=2, default=str))
        else:
            for line in report.lines():
                click.echo(line)
        if not report.ok:
            sys.exit(1)


# --------------------------------------------------------------------------- worker / beat


@cli.command()
@click.option(
    "--concurrency", "-c", type=int, default=None, help="Threads (default CARDSHARE_WORKER_CONCURRENCY)."
)
@click.option("--pool", type=click.Choice(["threads", "gevent", "prefork", "solo"]), default=None)
@click.option("--name", "-n", default=None, help="Worker node name (default cardshare@HOST).")
@click.option("--loglevel", "-l", default="INFO")
def worker(concurrency: int | None, pool: str | None, name: str | None, loglevel: str) -> None:
    """Run a Celery worker (starts embedded services when no URLs are set)."""
    with boot() as b:
        from worker.broker import worker_args
        from worker.celery_app import app

        app.worker_main(
            argv=worker_args(
                pool=pool or b.settings.worker_pool,
                concurrency=concurrency or b.settings.worker_concurrency,
                loglevel=loglevel,
                hostname=name,
            )
        )


@cli.command()
@click.option("--loglevel", "-l", default="INFO")
def beat(loglevel: str) -> None:
    """Run Celery beat: the sweep every interval, recovery every minute. Run exactly one."""
    with boot() as b:
        from worker.celery_app import app

        schedule = Path(b.settings.data_dir) / "celerybeat-schedule"
        schedule.parent.mkdir(parents=True, exist_ok=True)
        app.start(argv=["beat", "--schedule", str(schedule), "--loglevel", loglevel])


# --------------------------------------------------------------------------- simulator / demo


@cli.command()
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=8765, show_default=True, type=int)
@click.option(
    "--api-key",
    envvar="LINQ_API_V3_API_KEY",
    default="sim-key",
    show_default=True,
    help="Bearer token the simulator accepts (default from LINQ_API_V3_API_KEY).",
)
def simulator(host: str, port: int, api_key: str) -> None:
    """Run the Linq simulator (for local development; never the real API)."""
    from worker.simulator.server import serve_forever

    configure_logging("INFO", "text")
    serve_forever(api_key=api_key, host=host, port=port)


@cli.command()
@click.option("--chats", default=300, show_default=True, type=int, help="How many chats to seed.")
@click.option("--keep", is_flag=True, help="Keep the demo's data directory for inspection.")
def demo(chats: int, keep: bool) -> None:
    """Seed a simulator and embedded services, run a worker and two sweeps, print the summary."""
    from worker.demo import run_demo

    run_demo(chats=chats, keep=keep, echo=click.echo)


def _today(settings: Settings) -> dt.date:
    from worker.rules.cadence import share_day

    return share_day(dt.datetime.now(dt.UTC), settings.zone)


def main(argv: list[str] | None = None) -> None:
    """Entry point: every CardshareError becomes one line and its exit code."""
    try:
        cli.main(args=argv, prog_name="cardshare", standalone_mode=False)
    except click.exceptions.Abort:
        fail("aborted", 130)
    except click.exceptions.ClickException as exc:
        exc.show()
        sys.exit(exc.exit_code)
    except StoreUnavailable as exc:
        fail(str(exc), exc.exit_code)
    except CardshareError as exc:
        fail(str(exc), exc.exit_code)
    except KeyboardInterrupt:
        fail("interrupted", 130)


# Command groups kept in their own modules register themselves here; they import this module,
# so this comes last.
from worker import cli_cards, cli_ingest, cli_ops  # noqa: E402

cli_cards.register(cli)  # card list|create|update, contacts
cli_ingest.register(cli)  # webhooks, sync, import
cli_ops.register(cli)  # status, history, health, web
