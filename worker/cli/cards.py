"""`cardshare card list|create|update` and `cardshare contacts`.

Input is validated before anything starts (exit 2); every Linq failure arrives here as a
CardshareError whose message is one line, which `worker.cli.main` prints and maps to exit 1.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

import click

from worker import runtime
from worker.cards.contacts import DEFAULT_PER_PAGE, MAX_PER_PAGE, ContactsClient, ContactsPage
from worker.cards.desk import (
    WRITE_LIMIT,
    CardChanges,
    CardDesk,
    LineView,
    WriteResult,
    check_image_url,
    check_name,
    normalize_phone,
)
from worker.cli.common import boot, load_settings, render_table
from worker.errors import InputError
from worker.logs import register_secret


def register(cli: click.Group) -> None:
    """Add the `card` group and the `contacts` command to the `cardshare` group."""
    cli.add_command(card)
    cli.add_command(contacts)


def _desk() -> CardDesk:
    rt = runtime.get()
    return CardDesk(rt.clients.get(), rt.sessions)


# --------------------------------------------------------------------------- card


@click.group()
def card() -> None:
    """The contact card on each line: list, create, update."""


@card.command("list")
@click.option("--phone", default=None, help="Only this number (E.164).")
@click.option("--json", "as_json", is_flag=True, help="JSON for scripts.")
def card_list(phone: str | None, as_json: bool) -> None:
    """Every card on the account (or one), and whether cardshare will share for each line."""
    number = normalize_phone(phone) if phone is not None else None
    with boot():
        deps = runtime.get().deps
        views = _desk().views(number, now=deps.clock(), policy=deps.policy)
    if as_json:
        click.echo(json.dumps([v.to_json() for v in views], indent=2))
        return
    if not views:
        click.echo("no contact cards on this account, and no lines known to cardshare")
        return
    click.echo(
        render_table(["NUMBER", "NAME", "IMAGE", "ACTIVE", "SHARES", "DUE TODAY", "WHY"], _rows(views))
    )


def _rows(views: Sequence[LineView]) -> list[list[object]]:
    rows: list[list[object]] = []
    for v in views:
        name = " ".join(p for p in (v.card.first_name, v.card.last_name) if p) if v.card else "(no card)"
        rows.append(
            [
                v.phone_number,
                name,
                v.card.image_url if v.card else None,
                v.card.is_active if v.card else None,
                v.will_share,
                v.due_today,
                v.reason,
            ]
        )
    return rows


@card.command("create")
@click.option("--phone", required=True, help="The line's number (E.164).")
@click.option("--first", "first_name", required=True, help="First name shown on the card.")
@click.option("--last", "last_name", default=None, help="Last name.")
@click.option("--image", "image_url", default=None, help="Public https URL of the photo.")
def card_create(phone: str, first_name: str, last_name: str | None, image_url: str | None) -> None:
    """Set up the card on a line (once; use `card update` afterwards)."""
    number = normalize_phone(phone)
    first = check_name(first_name, "--first")
    last = check_name(last_name, "--last") if last_name is not None else None
    image = check_image_url(image_url) if image_url is not None else None
    with boot() as b:
        result = _desk().create(number, first, last, image)
        interval = b.settings.sweep_interval_s
    _report(result, "created", interval)


@card.command("update")
@click.option("--phone", required=True, help="The line's number (E.164).")
@click.option("--first", "first_name", default=None, help="New first name.")
@click.option("--last", "last_name", default=None, help="New last name.")
@click.option("--image", "image_url", default=None, help="New public https URL of the photo.")
def card_update(phone: str, first_name: str | None, last_name: str | None, image_url: str | None) -> None:
    """Change some fields of a line's card; only the fields given are sent."""
    number = normalize_phone(phone)
    changes = CardChanges(
        first_name=check_name(first_name, "--first") if first_name is not None else None,
        last_name=check_name(last_name, "--last") if last_name is not None else None,
        image_url=check_image_url(image_url) if image_url is not None else None,
    )
    if not changes.given():
        raise InputError("nothing to update: give --first, --last or --image")
    with boot() as b:
        result = _desk().update(number, changes)
        interval = b.settings.sweep_interval_s
    _report(result, "updated", interval, sent=sorted(changes.given()))


def _report(result: WriteResult, verb: str, sweep_interval_s: float, sent: list[str] | None = None) -> None:
    c = result.card
    name = " ".join(p for p in (c.first_name, c.last_name) if p)
    image = f"image {c.image_url}" if c.image_url else "no image"
    trace = f" (trace {result.trace_id})" if result.trace_id else ""
    fields = f"; sent {', '.join(sent)} only" if sent else ""
    click.echo(
        f"card {verb} for {c.phone_number}: {name}, {image}, active: {'yes' if c.is_active else 'no'}{trace}"
    )
    used = f"{result.writes_used} of {WRITE_LIMIT} card writes used for this number in the last 10 minutes"
    if c.is_active:
        click.echo(f"cardshare will share this card from the next sweep{fields}; {used}")
        return
    click.echo(
        f"the card is saved but NOT active yet: Linq applies it to the line first, and cardshare will not "
        f"share for {c.phone_number} until it is{fields}; {used}"
    )
    click.echo(
        f"next: check with `cardshare card list --phone {c.phone_number}` in a few minutes (the sweep "
        f"re-checks every {sweep_interval_s:g} s); if it stays inactive, re-apply it with "
        f"`cardshare card update --phone {c.phone_number} --first {c.first_name}`"
    )


# --------------------------------------------------------------------------- contacts


@click.command("contacts")
@click.option("--page", type=int, default=None, help="Page number (default 1).")
@click.option("--per-page", type=int, default=None, help=f"Contacts per page, at most {MAX_PER_PAGE}.")
@click.option("--all", "all_pages", is_flag=True, help="Every page, one after the other.")
@click.option("--json", "as_json", is_flag=True, help="JSON for scripts.")
def contacts(page: int | None, per_page: int | None, all_pages: bool, as_json: bool) -> None:
    """The account's CRM contacts (Linq v2 List Contacts)."""
    if all_pages and page is not None:
        raise InputError("--page and --all exclude each other")
    if page is not None and page < 1:
        raise InputError("--page must be at least 1")
    size = per_page if per_page is not None else (MAX_PER_PAGE if all_pages else DEFAULT_PER_PAGE)
    if not 1 <= size <= MAX_PER_PAGE:
        raise InputError(f"--per-page must be within 1..{MAX_PER_PAGE}")
    settings = load_settings()
    register_secret(settings.linq_api_key.get())
    client = ContactsClient.create(settings)
    try:
        pages = list(client.pages(size)) if all_pages else [client.page(page or 1, size)]
    finally:
        client.close()
    _print_contacts(pages, all_pages=all_pages, as_json=as_json)


def _print_contacts(pages: list[ContactsPage], *, all_pages: bool, as_json: bool) -> None:
    people = [c for p in pages for c in p.contacts]
    last = pages[-1]
    if as_json:
        out: dict[str, Any] = {"contacts": people}
        if all_pages:
            out["total_count"] = last.total_count
            out["pages"] = len(pages)
        else:
            out["pagination"] = last.pagination()
        click.echo(json.dumps(out, indent=2))
        return
    if people:
        rows = [
            [
                c.get("id"),
                c.get("full_name")
                or " ".join(str(c.get(k) or "") for k in ("first_name", "last_name")).strip(),
                c.get("phone_number"),
                c.get("email"),
                c.get("company"),
            ]
            for c in people
        ]
        click.echo(render_table(["ID", "NAME", "PHONE", "EMAIL", "COMPANY"], rows))
    if all_pages:
        click.echo(f"{len(people)} contacts ({len(pages)} pages; Linq reports {last.total_count})")
    else:
        click.echo(
            f"page {last.current_page} of {last.total_pages}: {len(people)} shown, "
            f"{last.total_count} contacts in all"
        )
