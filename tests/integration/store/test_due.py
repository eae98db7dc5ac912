"""The due rule is written twice: in Python (rules.cadence.why_not_due) and as one SQL predicate
(store.due) composed into the sweep's page, `status` and `card list`. One chat per NotDue reason
(each on its own line, so per-line counts name the chat) goes through both; they must agree."""

from __future__ import annotations

import dataclasses
import datetime as dt
import uuid

import pytest
from sqlalchemy import text

from tests.support.world import World
from worker.deps import Deps
from worker.ops.check import run_check
from worker.rules.cadence import NotDue, Policy, share_day, why_not_due
from worker.store.cards import due_today_by_line
from worker.store.chats import mark_not_found, mark_opted_out
from worker.store.reports import unmarked_due_by_line
from worker.store.session import transaction
from worker.store.shares import load_chat
from worker.store.sweeps import mark_due_page

NOW = dt.datetime.now(dt.UTC)

# name, how the chat is made, the reason the Python rule must give (None: due)
CASES: list[tuple[str, dict[str, object], NotDue | None]] = [
    ("due", {}, None),
    ("due_retry_row", {"row": "retry"}, None),
    ("chat_not_found", {"not_found": True}, NotDue.CHAT_NOT_FOUND),
    ("not_imessage", {"service": "SMS"}, NotDue.NOT_IMESSAGE),
    ("group_chat", {"is_group": True}, NotDue.GROUP_CHAT),
    ("opted_out", {"opted_out": True}, NotDue.OPTED_OUT),
    ("no_outbound", {"outbound": None}, NotDue.NO_OUTBOUND),
    ("outbound_later", {"outbound": NOW + dt.timedelta(hours=1)}, NotDue.OUTBOUND_LATER),
    ("stale", {"outbound": NOW - dt.timedelta(days=31)}, NotDue.STALE),
    ("card_inactive", {"card": False}, NotDue.CARD_INACTIVE),
    ("already_shared", {"row": "succeeded"}, NotDue.ALREADY_SHARED),
    ("day_closed", {"row": "skipped"}, NotDue.DAY_CLOSED),
]


def test_the_table_has_one_chat_per_reason() -> None:
    assert {reason for _, _, reason in CASES if reason is not None} == set(NotDue)


@dataclasses.dataclass(frozen=True)
class Made:
    name: str
    chat: uuid.UUID
    line: str
    reason: NotDue | None
    has_row: bool


def make(world: World, deps: Deps, day: dt.date) -> list[Made]:
    made = []
    for i, (name, how, reason) in enumerate(CASES):
        line = world.line(f"+1222555{i:04d}", active=bool(how.get("card", True)))
        outbound = how.get("outbound", NOW - dt.timedelta(hours=1))
        chat = world.chat(
            line,
            service=str(how.get("service", "iMessage")),
            is_group=bool(how.get("is_group", False)),
            outbound_at=outbound if outbound is not None else False,  # type: ignore[arg-type]
            in_sim=False,
        )
        with transaction(deps.sessions) as s:
            if how.get("not_found"):
                mark_not_found(s, chat)
            if how.get("opted_out"):
                mark_opted_out(s, chat)
            if "row" in how:
                s.execute(
                    text(
                        "INSERT INTO share_days (chat_id, day, status, lease_until) "
                        "VALUES (:c, :d, :s, now() - interval '1 minute')"
                    ),
                    {"c": chat, "d": day, "s": how["row"]},
                )
        made.append(Made(name, chat, line, reason, "row" in how))
    return made


@pytest.mark.parametrize("share_groups", [False, True])
def test_sql_predicate_and_python_rule_select_the_same_chats(
    world: World, deps: Deps, share_groups: bool
) -> None:
    today = share_day(NOW, deps.settings.zone)
    policy = dataclasses.replace(deps.policy, share_groups=share_groups)
    assert isinstance(policy, Policy)
    made = make(world, deps, today)
    expected = {m.name: (None if m.reason is NotDue.GROUP_CHAT and share_groups else m.reason) for m in made}

    # The Python rule, over the facts the share path loads.
    with transaction(deps.sessions) as s:
        rows = {m.name: load_chat(s, m.chat, today) for m in made}
    python = {}
    for name, row in rows.items():
        assert row is not None
        python[name] = why_not_due(
            row.facts, now=NOW, policy=policy, shared_today=row.shared_today, day_closed=row.day_closed
        )
    assert python == expected
    due = {m.name for m in made if python[m.name] is None}
    # Due once the card is active: `card list` counts those (the card is its own column there).
    due_but_card = due | {m.name for m in made if m.reason is NotDue.CARD_INACTIVE}
    by_line = {m.line: m.name for m in made}

    with transaction(deps.sessions) as s:
        # status: chats due now that no sweep has marked yet.
        unmarked = unmarked_due_by_line(s, day=today, now=NOW, policy=policy)
        unseen = {m.name for m in made if m.name in due and not m.has_row}
        assert {by_line[line] for line in unmarked} == unseen
        assert set(unmarked.values()) == {1}
        # card list: due today on each line, the card's state aside.
        per_line = due_today_by_line(s, list(by_line), day=today, now=NOW, policy=policy)
        assert {by_line[line] for line in per_line} == due_but_card
        # check: judges the unmarked chats with the Python rule.
        report = run_check(s, today, policy, now=NOW)
        assert {m.name for m in made if m.chat in report.unseen_due} == unseen
        # The sweep's page: marks the due chats with no row or an open one whose lease ended.
        page = mark_due_page(
            s,
            day=today,
            now=NOW,
            policy=policy,
            after=None,
            limit=100,
            queue_lease_s=1800,
            max_lost_claims=3,
        )
    assert {m.name for m in made if m.chat in page.queued} == due
