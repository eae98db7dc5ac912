"""Refresh one line's card from Linq, because a `contact_card.created/updated/deleted` webhook
named it. The payload carries no `is_active`, so only `GET /v3/contact_card` can say whether the
line's card is active now (docs/linq-contract.md §7.9). Runs as a control-queue task: the
receiver only records the event and hands the line over."""

from __future__ import annotations

import logging
from dataclasses import dataclass

from worker.deps import Deps
from worker.linq import LinqCallError
from worker.logs import event
from worker.store.cards import CardState, mark_card_inactive, store_cards
from worker.store.session import transaction

log = logging.getLogger("cardshare.cards")


@dataclass(frozen=True)
class Refreshed:
    line: str
    active: bool | None  # None: Linq could not be asked; the cache stays as it was
    error: str | None = None

    def one_line(self) -> str:
        if self.active is None:
            return f"card refresh {self.line}: failed ({self.error}); the next sweep refreshes it"
        return f"card refresh {self.line}: {'active' if self.active else 'no active card'}"


def refresh_card(deps: Deps, line: str) -> Refreshed:
    try:
        cards = deps.client().list_cards(line)
    except LinqCallError as exc:
        if exc.status == 404 and exc.code in (2012, 2001):
            cards = []  # no card on the number any more (contact_card.deleted)
        else:
            event(log, "card.refresh_failed", logging.WARNING, line=line, error=exc.one_line())
            return Refreshed(line, None, exc.one_line())
    mine = [c for c in cards if c.phone_number == line]
    with transaction(deps.sessions) as s:
        if mine:
            c = mine[0]
            store_cards(
                s,
                [CardState(c.phone_number, c.first_name, c.last_name, c.image_url, c.is_active)],
                complete=False,
            )
        else:
            mark_card_inactive(s, line)
    active = bool(mine and mine[0].is_active)
    event(log, "card.refreshed", line=line, active=active)
    return Refreshed(line, active)
