"""Row factories: the same facts written to PostgreSQL and to the simulator."""

from __future__ import annotations

import datetime as dt
import uuid
from dataclasses import dataclass
from typing import Literal, cast

from worker.deps import Deps
from worker.rules.facts import ChatActivity
from worker.simulator import SimulatorAdmin
from worker.simulator.client import ChatSpec
from worker.store.cards import CardState, store_cards
from worker.store.chats import record_activity
from worker.store.lines import record_reputation
from worker.store.session import transaction


@dataclass
class World:
    """Row factory writing the same facts to PostgreSQL and to the simulator."""

    deps: Deps
    sim: SimulatorAdmin

    def line(
        self,
        phone: str = "+12223334444",
        *,
        active: bool = True,
        in_db: bool = True,
        reputation: Literal["HEALTHY", "AT_RISK", "CRITICAL"] = "HEALTHY",
    ) -> str:
        """A line with its card, at Linq (the simulator) and in cardshare's cache; the reputation
        is Linq's, and cardshare's as of now."""
        if reputation != "HEALTHY":  # lines start HEALTHY; add_line would reset other settings
            self.sim.add_line(phone, reputation=reputation)
        self.sim.add_cards(
            [{"phone_number": phone, "first_name": "Acme", "last_name": "Support", "is_active": active}]
        )
        if in_db:
            with transaction(self.deps.sessions) as s:
                store_cards(s, [CardState(phone, "Acme", "Support", None, active)], complete=False)
                record_reputation(s, phone, reputation, at=dt.datetime.now(dt.UTC))
        return phone

    def chat(
        self,
        line: str = "+12223334444",
        *,
        service: str = "iMessage",
        is_group: bool = False,
        outbound_at: dt.datetime | bool | None = True,
        chat_id: uuid.UUID | None = None,
        in_sim: bool = True,
        health: Literal["HEALTHY", "AT_RISK", "CRITICAL", "OPTED_OUT"] | None = None,
    ) -> uuid.UUID:
        chat_id = chat_id or uuid.uuid4()
        when: dt.datetime | None
        if outbound_at is True:
            when = dt.datetime.now(dt.UTC) - dt.timedelta(hours=1)
        elif outbound_at is False:
            when = None
        else:
            when = outbound_at
        if in_sim:
            messages = [] if when is None else [{"is_from_me": True, "sent_at": when.isoformat()}]
            spec = {
                "id": str(chat_id),
                "line": line,
                "service": service,
                "is_group": is_group,
                "messages": messages,
                "health": health or "HEALTHY",
            }
            self.sim.add_chats([cast("ChatSpec", spec)])
        with transaction(self.deps.sessions) as s:
            record_activity(
                s,
                [
                    ChatActivity(
                        chat_id,
                        line,
                        service=service,
                        is_group=is_group,
                        outbound_at=when,
                        health_status=health,
                    )
                ],
            )
        return chat_id
