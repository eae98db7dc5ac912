"""Suspect chat-days go through the sandbox: one call at a time in a child process."""

from __future__ import annotations

import dataclasses
import datetime as dt
import os
import uuid
from collections.abc import Iterator

import pytest
from sqlalchemy import text

from tests.support.world import World
from worker.deps import Deps
from worker.sharing.sandbox import Sandbox
from worker.sharing.share import Outcome, share_chat
from worker.store import shares
from worker.store.session import transaction


def lose_claim(deps: Deps, chat: uuid.UUID, day: dt.date) -> None:
    """A worker claimed the chat-day and vanished."""
    with transaction(deps.sessions) as s:
        claim = shares.claim(s, chat, day, lease_s=60, max_lost_claims=3, task_id="vanished")
        assert claim is not None
        s.execute(
            text("UPDATE share_days SET lease_until = now() - interval '1 second' WHERE chat_id = :c"),
            {"c": chat},
        )


def expire(deps: Deps, chat: uuid.UUID) -> None:
    with transaction(deps.sessions) as s:
        s.execute(
            text("UPDATE share_days SET lease_until = now() - interval '1 second' WHERE chat_id = :c"),
            {"c": chat},
        )


@pytest.fixture
def sandboxed(deps: Deps) -> Iterator[tuple[Deps, dict[str, str]]]:
    env = {**os.environ, **deps.settings.to_env()}
    sandbox = Sandbox(env)
    yield dataclasses.replace(deps, sandbox=sandbox), env
    sandbox.close()


def test_a_suspect_chat_day_shares_through_the_sandbox(
    world: World, sandboxed: tuple[Deps, dict[str, str]], today: dt.date
) -> None:
    deps, _ = sandboxed
    world.line()
    chat = world.chat()
    lose_claim(deps, chat, today)
    result = share_chat(chat, today, deps)
    assert result.outcome is Outcome.SHARED
    assert world.sim.share_count(str(chat)) == 1
    assert isinstance(deps.sandbox, Sandbox)
    assert deps.sandbox._proc is not None  # the call really went through the child


def test_a_poison_chat_fails_after_three_crashes_and_spares_the_worker(
    world: World, deps: Deps, today: dt.date
) -> None:
    world.line()
    poison = world.chat()
    env = {**os.environ, **deps.settings.to_env(), "CARDSHARE_DRILL_CRASH_CHATS": str(poison)}
    sandbox = Sandbox(env)
    sdeps = dataclasses.replace(deps, sandbox=sandbox)
    try:
        lose_claim(sdeps, poison, today)  # crash 1 took the whole worker down
        second = share_chat(poison, today, sdeps)
        assert second.outcome is Outcome.UNKNOWN  # crash 2, inside the sandbox only
        expire(sdeps, poison)
        third = share_chat(poison, today, sdeps)
        assert third.outcome is Outcome.FAILED
        assert third.reason
        assert third.reason.startswith("poison")
        with deps.sessions() as s:
            row = s.execute(
                text("SELECT status, lost_claims FROM share_days WHERE chat_id = :c"), {"c": poison}
            ).one()
            n_attempts = s.execute(
                text("SELECT count(*) FROM attempts WHERE chat_id = :c"), {"c": poison}
            ).scalar()
        assert tuple(row) == ("failed", 3)
        assert n_attempts == 2  # crash 1 happened before any attempt row of this fixture
        # The sandbox restarts for the next suspect; an innocent chat still shares.
        innocent = world.chat()
        lose_claim(sdeps, innocent, today)
        assert share_chat(innocent, today, sdeps).outcome is Outcome.SHARED
    finally:
        sandbox.close()
