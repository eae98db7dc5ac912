"""`cardshare share CHAT_ID`, `sweep`, `recover`: the same work beat and the workers do, by hand."""

from __future__ import annotations

import sys

import click

from worker import runtime
from worker.cli.common import boot, broker_errors, fail, parse_chat_id
from worker.errors import InputError, UnknownChat
from worker.queue.tasks import resolve_pending_events, run_pass
from worker.queue.tasks import share_chat as share_task
from worker.rules.cadence import share_day
from worker.rules.gate import decide
from worker.sharing import share as sharing
from worker.store.audit import audit
from worker.store.session import transaction
from worker.store.shares import load_chat


def register(cli: click.Group) -> None:
    cli.add_command(share)
    cli.add_command(sweep)
    cli.add_command(recover)


@click.command()
@click.argument("chat_id")
@click.option("--wait", is_flag=True, help="Run the share here and print its outcome.")
def share(chat_id: str, wait: bool) -> None:
    """Share the card into CHAT_ID today (same once-a-day rules as the sweep)."""
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
        held: str | None = None
        with transaction(deps.sessions) as s:
            chat = load_chat(s, cid, day, default_zone=b.settings.zone)
            if chat is not None and chat.line is not None and chat.line.today(now) != day:
                # The chat's line has its own day (docs/decisions.md §12).
                day = chat.line.today(now)
                chat = load_chat(s, cid, day, default_zone=b.settings.zone)
            refusal: str | None = None
            if chat is None:
                refusal = f"chat {cid} is unknown to cardshare (no webhook, sync or import has recorded it)"
            else:
                assert chat.line is not None
                decision = decide(
                    chat.facts,
                    chat.line,
                    now=now,
                    policy=deps.policy,
                    shared_today=chat.shared_today,
                    day_closed=chat.day_closed,
                )
                if decision.not_due is not None:
                    refusal = f"chat {cid} is not due on {day}: {sharing.explain(decision.not_due)}"
                elif decision.held is not None:
                    held = decision.held.text()
            audit(
                s,
                actor="cli",
                action="share",
                chat_ref=str(cid),
                outcome="refused" if refusal else ("run" if wait else "enqueued"),
                detail=refusal or (f"held: {held}" if held else None),
            )
        if refusal:
            if chat is None:
                raise UnknownChat(refusal)
            fail(refusal)
        if wait:
            result = sharing.share_chat(cid, day, deps, task_id=None)
            click.echo(result.one_line())
            if result.outcome not in (sharing.Outcome.SHARED, sharing.Outcome.CONFIRMED):
                sys.exit(1)
            return
        with broker_errors(b.settings.redis_url):
            sent = share_task.apply_async(args=(str(cid), day.isoformat()))
        if held:
            click.echo(
                f"enqueued chat {cid} for {day} (task {sent.id}); its line is held ({held}): "
                "it is shared when the hold lifts, today"
            )
            return
        click.echo(f"enqueued chat {cid} for {day} (task {sent.id}); a worker will share it")


@click.command()
def sweep() -> None:
    """Run one sweep now: refresh cards, enqueue every due chat."""
    _run_pass("sweep")


@click.command()
def recover() -> None:
    """Re-enqueue chat-days whose lease ran out (beat runs this every minute)."""
    _run_pass("recover")


def _run_pass(kind: str) -> None:
    with boot() as b, broker_errors(b.settings.redis_url):
        report = run_pass(kind)
        click.echo(report.one_line())
        if kind == "recover":
            click.echo(resolve_pending_events())
