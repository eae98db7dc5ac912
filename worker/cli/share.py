"""`cardshare share CHAT_ID`, `sweep`, `recover`: the same work beat and the workers do, by hand.

`share` (without `--wait`) and `recover` against running servers take the plain path: one
psycopg connection (`store.plain`), no SQLAlchemy, and Celery imported only to publish
(`queue.lazy`), so a refusal, or a recovery with nothing to re-queue, never loads it
(bench/README.md §6). With an embedded server to start, or `--wait`, the full boot.
"""

from __future__ import annotations

import datetime as dt
import sys
import uuid
from collections.abc import Callable

import click

from worker.cli.common import (
    boot,
    broker_errors,
    fail,
    load_settings,
    parse_chat_id,
    plain_boot,
    running_servers,
)
from worker.config import Settings
from worker.deps import policy_of, utcnow
from worker.errors import InputError, UnknownChat
from worker.ingest.pending import resolve_pending
from worker.queue.lazy import LazyPublisher
from worker.rules.cadence import explain, share_day
from worker.rules.gate import decide
from worker.sharing.passes import QueueDepth, queue_lease_s
from worker.sharing.recover import run_recover
from worker.store.audit import audit
from worker.store.shares import load_chat
from worker.store.sql import Database


def register(cli: click.Group) -> None:
    cli.add_command(share)
    cli.add_command(sweep)
    cli.add_command(recover)


@click.command()
@click.argument("chat_id")
@click.option("--wait", is_flag=True, help="Run the share here and print its outcome.")
def share(chat_id: str, wait: bool) -> None:
    """Share the card into CHAT_ID today (same once-a-day rules as the sweep)."""
    settings = load_settings()
    if not wait and running_servers(settings):
        with plain_boot(settings) as db:
            _enqueue(db, settings, chat_id)
        return
    from worker import runtime
    from worker.sharing import share as sharing
    from worker.store.session import Sessions

    with boot(settings) as b:
        deps = runtime.get().deps
        pooled = Sessions(deps.sessions)
        if not wait:
            _enqueue(pooled, b.settings, chat_id, clock=deps.clock)
            return
        cid, day, _ = _judge(pooled, b.settings, chat_id, deps.clock(), run=True)
        result = sharing.share_chat(cid, day, deps, task_id=None)
        click.echo(result.one_line())
        if result.outcome not in (sharing.Outcome.SHARED, sharing.Outcome.CONFIRMED):
            sys.exit(1)


def _enqueue(
    db: Database, settings: Settings, chat_id: str, *, clock: Callable[[], dt.datetime] = utcnow
) -> None:
    cid, day, held = _judge(db, settings, chat_id, clock(), run=False)
    with broker_errors(settings.redis_url), LazyPublisher(settings) as publish:
        task_id = publish.one(cid, day)
    if held:
        click.echo(
            f"enqueued chat {cid} for {day} (task {task_id}); its line is held ({held}): "
            "it is shared when the hold lifts, today"
        )
        return
    click.echo(f"enqueued chat {cid} for {day} (task {task_id}); a worker will share it")


def _judge(
    db: Database, settings: Settings, chat_id: str, now: dt.datetime, *, run: bool
) -> tuple[uuid.UUID, dt.date, str | None]:
    """Is CHAT_ID due today, by the rules the worker applies? Its id, its day (its line's own),
    and the hold its line is under, if any; a refusal ends the command (and is audited)."""
    try:
        cid = parse_chat_id(chat_id)
    except InputError as exc:
        with db.transaction() as s:
            audit(s, actor="cli", action="share", chat_ref=chat_id[:100], outcome="refused", detail=str(exc))
        raise
    day = share_day(now, settings.zone)
    held: str | None = None
    with db.transaction() as s:
        chat = load_chat(s, cid, day, default_zone=settings.zone)
        if chat is not None and chat.line is not None and chat.line.today(now) != day:
            # The chat's line has its own day (docs/decisions.md §12).
            day = chat.line.today(now)
            chat = load_chat(s, cid, day, default_zone=settings.zone)
        refusal: str | None = None
        if chat is None:
            refusal = f"chat {cid} is unknown to cardshare (no webhook, sync or import has recorded it)"
        else:
            assert chat.line is not None
            decision = decide(
                chat.facts,
                chat.line,
                now=now,
                policy=policy_of(settings),
                shared_today=chat.shared_today,
                day_closed=chat.day_closed,
            )
            if decision.not_due is not None:
                refusal = f"chat {cid} is not due on {day}: {explain(decision.not_due)}"
            elif decision.held is not None:
                held = decision.held.text()
        audit(
            s,
            actor="cli",
            action="share",
            chat_ref=str(cid),
            outcome="refused" if refusal else ("run" if run else "enqueued"),
            detail=refusal or (f"held: {held}" if held else None),
        )
    if refusal:
        if chat is None:
            raise UnknownChat(refusal)
        fail(refusal)
    return cid, day, held


@click.command()
def sweep() -> None:
    """Run one sweep now: refresh cards, enqueue every due chat."""
    from worker.queue.tasks import run_pass

    with boot() as b, broker_errors(b.settings.redis_url):
        click.echo(run_pass("sweep").one_line())


@click.command()
def recover() -> None:
    """Re-enqueue chat-days whose lease ran out (beat runs this every minute)."""
    settings = load_settings()
    if running_servers(settings):
        assert settings.redis_url is not None
        redis_url = settings.redis_url

        def depth() -> QueueDepth:
            # redis-py (0.1-0.25 s) once the database has answered, as for `status`.
            from worker.ops.broker_view import share_queue_depth

            return share_queue_depth(redis_url)

        with plain_boot(settings) as db, broker_errors(redis_url), LazyPublisher(settings) as publish:
            report = run_recover(
                db, settings, utcnow(), publish, depth, queue_lease_s=queue_lease_s(settings)
            )
            click.echo(report.one_line())
            click.echo(resolve_pending(db).one_line())
        return
    from worker.queue.tasks import resolve_pending_events, run_pass

    with boot(settings) as b, broker_errors(b.settings.redis_url):
        click.echo(run_pass("recover").one_line())
        click.echo(resolve_pending_events())
