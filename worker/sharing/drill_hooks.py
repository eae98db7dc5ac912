"""Fault injection for the reliability drills. Inert unless CARDSHARE_DRILL_CRASH_CHATS is set.

A "poison chat" is one whose task always kills its process (a segfaulting C extension, an OOM
kill). Nothing in a healthy deployment does that on purpose, so the drills need a switch: the
chat ids listed in CARDSHARE_DRILL_CRASH_CHATS make the process exit hard right before the
share call, after the claim and the attempt row are committed, as a real crash would.
"""

from __future__ import annotations

import os
import uuid

CRASH_EXIT_CODE = 70


def crash_chats() -> frozenset[str]:
    raw = os.environ.get("CARDSHARE_DRILL_CRASH_CHATS", "")
    return frozenset(part.strip().lower() for part in raw.split(",") if part.strip())


def before_share_call(chat_id: uuid.UUID) -> None:
    if str(chat_id) in crash_chats():
        os._exit(CRASH_EXIT_CODE)
