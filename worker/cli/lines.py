"""`cardshare line list|pause|resume|set` and `cardshare warnings list|ack`.

The work happens in `worker.ops.controls` (the controls) and `worker.ops.status` (what a line
looks like now); input is checked there before anything is written.
"""

from __future__ import annotations

import json
from collections.abc import Sequence

import click

from worker import runtime
from worker.cards.desk import normalize_phone
from worker.cli.common import boot, render_table
from worker.errors import InputError
from worker.ops import controls
from worker.ops import status as status_mod
from worker.ops.status import LineStatus
from worker.queue.tasks import run_pass
from worker.store.session import transaction
from worker.store.warnings import acknowledge, warnings


def register(cli: click.Group) -> None:
    cli.add_command(line)
    cli.add_command(warnings_group)


@click.group()
def line() -> None:
    """Each line's state and controls: list, pause, resume, set (zone, hours, pace)."""


def _target(phone: str | None, every: bool) -> str | None:
    if every == (phone is not None):
        raise InputError("give a LINE (E.164) or --all, not both")
    return None if every else normalize_phone(phone or "")


@line.command("list")
@click.option("--json", "as_json", is_flag=True, help="JSON for scripts.")
def line_list(as_json: bool) -> None:
    """Every line: reputation, status, paused, hours, pace, card, due today, can it finish."""
    with boot() as b:
        deps = runtime.get().deps
        st = status_mod.collect_for(deps.sessions, b.settings, None, now=deps.clock())
    shown = [ln for ln in st.lines if ln.view is not None]
    if as_json:
        click.echo(
            json.dumps(
                {
                    "account_paused": st.account_paused,
                    "lines": [
                        {**ln.view.as_dict(), "due_today": ln.counts.due, "shared_today": ln.counts.shared}
                        for ln in shown
                        if ln.view is not None
                    ],
                },
                indent=2,
            )
        )
        return
    if st.account_paused:
        click.echo(f"ACCOUNT PAUSED: {st.account_paused}")
    if not shown:
        click.echo("no lines known to cardshare")
        return
    click.echo(render_table(HEADERS, [_row(ln) for ln in shown]))


HEADERS = [
    "LINE",
    "DAY",
    "REPUTATION",
    "STATUS",
    "PAUSED",
    "HOURS",
    "PACE",
    "CARD",
    "DUE TODAY",
    "LEFT",
    "TODAY",
]


def _row(ln: LineStatus) -> Sequence[object]:
    v = ln.view
    assert v is not None
    zone = v.zone + ("" if not v.zone_is_default else " (default)")
    if v.held:
        today = "held: " + v.held.split(":", 1)[0]
    elif v.estimate.can_finish:
        today = "can finish"
    else:
        today = f"cannot finish: ~{v.estimate.fits or 0:,} fit"
    return [
        v.phone,
        f"{v.day} {zone}",
        v.reputation or "HEALTHY?",
        v.linq_status or "ACTIVE?",
        v.paused or ("account" if v.account_paused else "no"),
        v.hours or "all day",
        v.pace_text(),
        "active" if v.card_active else "inactive",
        ln.counts.due,
        v.remaining,
        today,
    ]


@line.command("pause")
@click.argument("phone", required=False)
@click.option("--all", "every", is_flag=True, help="Pause every line (the whole account).")
@click.option("--reason", default=None, help="Why (shown on status and in the audit).")
@click.option("--until", "until", default=None, help="When it ends by itself: 2h, 1h30m, 1d, or an ISO time.")
def line_pause(phone: str | None, every: bool, reason: str | None, until: str | None) -> None:
    """Stop sharing for LINE (or --all) until resumed: its due chats wait, the same day."""
    target = _target(phone, every)
    with boot():
        done = controls.pause(runtime.get().deps, target, reason=reason, until=until)
    click.echo(done.message)


@line.command("resume")
@click.argument("phone", required=False)
@click.option(
    "--all", "every", is_flag=True, help="Lift the account-wide pause (lines paused on their own stay)."
)
def line_resume(phone: str | None, every: bool) -> None:
    """Lift LINE's pause (or the account's): its held chats go out today, at its pace."""
    target = _target(phone, every)
    with boot():
        done = controls.resume(runtime.get().deps, target, release=lambda: run_pass("release"))
    click.echo(done.message)


@line.command("set")
@click.argument("phone")
@click.option("--timezone", "zone", default=None, help="IANA zone of the line's day, or `default`.")
@click.option("--hours", default=None, help="Local sharing hours HH:MM-HH:MM, or `none`.")
@click.option("--pace", default=None, help="Shares per rolling minute for this line, or `default`.")
def line_set(phone: str, zone: str | None, hours: str | None, pace: str | None) -> None:
    """Give LINE its own day (time zone), sharing hours or pace."""
    number = normalize_phone(phone)
    with boot():
        done = controls.set_line(runtime.get().deps, number, zone=zone, hours=hours, pace=pace)
        if done.rearmed:
            run_pass("release")
    click.echo(done.message)


# --------------------------------------------------------------------------- warnings


@click.group("warnings")
def warnings_group() -> None:
    """What Linq said about the account that needs you: API tokens expiring, subscriptions off."""


@warnings_group.command("list")
@click.option("--all", "show_all", is_flag=True, help="Include acknowledged and resolved ones.")
@click.option("--json", "as_json", is_flag=True, help="JSON for scripts.")
def warnings_list(show_all: bool, as_json: bool) -> None:
    """Open warnings (or all of them)."""
    with boot(), transaction(runtime.get().sessions) as s:
        rows = warnings(s, include_closed=show_all)
    if as_json:
        click.echo(
            json.dumps(
                [
                    {
                        "id": w.id,
                        "kind": w.kind,
                        "subject": w.subject,
                        "summary": w.summary,
                        "occurred_at": w.occurred_at.isoformat() if w.occurred_at else None,
                        "raised_at": w.raised_at.isoformat(),
                        "open": w.open,
                        "acknowledged_by": w.acknowledged_by,
                        "resolution": w.resolution,
                    }
                    for w in rows
                ],
                indent=2,
            )
        )
        return
    if not rows:
        click.echo("no open warnings" if not show_all else "no warnings")
        return
    click.echo(
        render_table(
            ["ID", "KIND", "SUBJECT", "SINCE", "STATE", "SUMMARY"],
            [
                [
                    w.id,
                    w.kind,
                    w.subject,
                    (w.occurred_at or w.raised_at).strftime("%Y-%m-%dT%H:%MZ"),
                    "open" if w.open else (w.resolution or f"acknowledged by {w.acknowledged_by}"),
                    w.summary,
                ]
                for w in rows
            ],
        )
    )


@warnings_group.command("ack")
@click.argument("warning_id", required=False, type=int)
@click.option("--all", "every", is_flag=True, help="Acknowledge every open warning.")
def warnings_ack(warning_id: int | None, every: bool) -> None:
    """Acknowledge warning ID (or --all): it leaves `status` and the status page."""
    if every == (warning_id is not None):
        raise InputError("give a warning ID or --all, not both")
    with boot(), transaction(runtime.get().sessions) as s:
        n = acknowledge(s, warning_id=warning_id, by=controls.operator())
    if n == 0 and warning_id is not None:
        raise InputError(f"warning {warning_id} is not open (see `cardshare warnings list --all`)")
    click.echo(f"acknowledged {n} warning(s)")
