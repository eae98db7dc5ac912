"""What cardshare knows about a chat: the facts the due rule reads, and one new fact arriving.

Plain frozen dataclasses, shared by the rules, the store and every way activity comes in
(webhooks, sync, import), so none of them has to import another to speak about a chat.
"""

from __future__ import annotations

import datetime as dt
import uuid
from dataclasses import dataclass

# A line's phone number as cardshare stores it: E.164, `+` then 7 to 15 digits (docs/linq-contract.md §1).
E164_PATTERN = r"^\+[1-9][0-9]{6,14}$"


@dataclass(frozen=True)
class ChatFacts:
    """What the rules need to know about one chat."""

    service: str | None
    is_group: bool
    first_outbound_at: dt.datetime | None
    last_outbound_at: dt.datetime | None
    opted_out: bool
    card_active: bool
    not_found: bool = False
    health_status: str | None = None  # Linq's chat health: HEALTHY, AT_RISK, CRITICAL, OPTED_OUT


@dataclass(frozen=True)
class ChatActivity:
    """One fact about a chat, from a webhook, a sync or an import."""

    chat_id: uuid.UUID
    line_phone: str
    service: str | None = None
    is_group: bool | None = None
    outbound_at: dt.datetime | None = None
    opted_out: bool | None = None
    health_status: str | None = None
    # When the message behind `opted_out=False` arrived: an inbound message older than the
    # opt-out does not clear it (docs/decisions.md §6). None clears unconditionally.
    inbound_at: dt.datetime | None = None
