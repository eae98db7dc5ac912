"""Issue 19, point 9: `cardshare check` is strict. A day that ended failed or poison with no call
that reached Linq is missed, a poison verdict names what crashed, and a 429 confirms an unknown
share only inside Linq's 5-minute window after it."""

from __future__ import annotations

import datetime as dt
import json
import uuid

import pytest
from sqlalchemy import text

from tests.support.cli import cardshare
from tests.support.world import World
from worker.config import Settings
from worker.deps import Deps
from worker.store.session import transaction

pytestmark = pytest.mark.acceptance


def _day(
    deps: Deps, chat: uuid.UUID, today: dt.date, status: str, reason: str | None, *, confirmed: bool
) -> uuid.UUID:
    token = uuid.uuid4()
    with transaction(deps.sessions) as s:
        s.execute(
            text(
                "INSERT INTO share_days (chat_id, day, status, lease_until, reason, finished_at, "
                "claim_token, claims, lost_claims, confirmed_by_rate_limit) "
                "VALUES (:c, :d, :st, now(), :r, now(), :t, 3, 3, :conf)"
            ),
            {"c": chat, "d": today, "st": status, "r": reason, "t": token, "conf": confirmed},
        )
    return token


def _attempt(deps: Deps, chat: uuid.UUID, today: dt.date, token: uuid.UUID, no: int, *, ago_s: float,
             outcome: str | None, http: int | None) -> None:  # fmt: skip
    with transaction(deps.sessions) as s:
        s.execute(
            text(
                "INSERT INTO attempts (chat_id, day, attempt_no, claim_token, started_at, finished_at, "
                "outcome, http_status) VALUES (:c, :d, :n, :t, now() - make_interval(secs => :ago), "
                "CASE WHEN CAST(:o AS text) IS NULL THEN NULL ELSE now() - make_interval(secs => :ago) END, "
                "CAST(:o AS text), :h)"
            ),
            {"c": chat, "d": today, "n": no, "t": token, "ago": ago_s, "o": outcome, "h": http},
        )


def test_check_counts_a_poison_day_without_a_linq_call_as_missed_and_names_the_crash(
    world: World, deps: Deps, settings: Settings, today: dt.date
) -> None:
    world.line()
    crashed, answered = world.chat(), world.chat()
    reason = (
        "poison: 3 crashes while sharing this chat (last: the sandbox process making the share call "
        "was killed by SIGKILL); not retried today"
    )
    t1 = _day(deps, crashed, today, "failed", reason, confirmed=False)
    for n in (1, 2, 3):
        _attempt(deps, crashed, today, t1, n, ago_s=60 * n, outcome="unknown", http=None)
    t2 = _day(deps, answered, today, "failed", "chat_not_found (HTTP 404/2001)", confirmed=False)
    _attempt(deps, answered, today, t2, 1, ago_s=60, outcome="fatal", http=404)
    # Failed (not poison) after transport errors only: no call reached Linq either.
    unreached = world.chat()
    t3 = _day(deps, unreached, today, "failed", "retries_exhausted: connect error", confirmed=False)
    _attempt(deps, unreached, today, t3, 1, ago_s=60, outcome="retryable", http=None)
    done = cardshare(settings, "check", "--json")
    assert done.returncode == 1, done.stderr
    report = json.loads(done.stdout)
    assert sorted(report["missed_chats"]) == sorted([str(crashed), str(unreached)])
    assert "no call that reached Linq" in report["missed_why"][str(unreached)]
    assert "no call that reached Linq" in report["missed_why"][str(crashed)]
    assert report["poison"] == [{"chat_id": str(crashed), "reason": reason}]
    text_out = cardshare(settings, "check")
    assert f"poison: {crashed}: " in text_out.stdout
    assert "killed by SIGKILL" in text_out.stdout


def test_check_accepts_a_429_confirmation_only_inside_the_window(
    world: World, deps: Deps, settings: Settings, today: dt.date
) -> None:
    world.line()
    inside, outside = world.chat(), world.chat()
    t1 = _day(deps, inside, today, "succeeded", None, confirmed=True)
    _attempt(deps, inside, today, t1, 1, ago_s=200, outcome="unknown", http=None)
    _attempt(deps, inside, today, t1, 2, ago_s=10, outcome="ok", http=429)
    t2 = _day(deps, outside, today, "succeeded", None, confirmed=True)
    _attempt(deps, outside, today, t2, 1, ago_s=700, outcome="unknown", http=None)
    _attempt(deps, outside, today, t2, 2, ago_s=10, outcome="ok", http=429)
    done = cardshare(settings, "check", "--json")
    assert done.returncode == 1, done.stderr
    report = json.loads(done.stdout)
    assert report["missed_chats"] == [str(outside)]
    assert "not the share window's answer" in report["missed_why"][str(outside)]
