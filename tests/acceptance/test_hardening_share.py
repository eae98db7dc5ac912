"""Issue 19, point 1: whatever Linq answers, the share path ends in a recorded state, through a
real worker process. A 2xx is recorded as succeeded once, and never called again."""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import text

from tests.support.cli import cardshare
from tests.support.procs import Procs, wait_until, worker_consuming
from tests.support.world import World
from worker.config import Settings
from worker.deps import Deps
from worker.rules import bounds
from worker.store.session import transaction

pytestmark = pytest.mark.acceptance

SHARE = "/share_contact_card$"
OPEN = ("queued", "claimed")


@pytest.fixture
def worker(settings: Settings, tmp_path: Path) -> Iterator[Procs]:
    from worker.queue.app import app, configure

    configure(settings)
    procs = Procs(settings, tmp_path)
    procs.worker(concurrency=4)
    worker_consuming(app)
    yield procs
    procs.stop_all()


def day_of(deps: Deps, chat: uuid.UUID) -> dict[str, Any] | None:
    with deps.sessions() as s:
        row = s.execute(text("SELECT * FROM share_days WHERE chat_id = :c"), {"c": chat}).mappings().first()
        return dict(row) if row else None


def attempt_rows(deps: Deps, chat: uuid.UUID) -> list[dict[str, Any]]:
    with deps.sessions() as s:
        rows = s.execute(
            text("SELECT * FROM attempts WHERE chat_id = :c ORDER BY attempt_no"), {"c": chat}
        ).mappings()
        return [dict(r) for r in rows]


def settled(deps: Deps, chat: uuid.UUID) -> bool:
    row = day_of(deps, chat)
    return row is not None and row["status"] not in OPEN


ODD_ANSWERS: dict[str, dict[str, Any]] = {
    "2xx with a 1000-character X-Trace-ID": {"mode": "pass", "headers": {"X-Trace-ID": "t" * 1000}},
    "2xx with a trace id of spaces and punctuation": {
        "mode": "pass",
        "headers": {"X-Trace-ID": "a b;c=d," * 20},
    },
    "429 with Retry-After inf": {"status": 429, "headers": {"Retry-After": "inf"}, "times": 1},
    "429 with Retry-After 1e400 and retry-after-ms nan": {
        "status": 429,
        "headers": {"Retry-After": "1e400", "Retry-After-Ms": "nan"},
        "times": 1,
    },
    "503 with a year-99999 Retry-After date": {
        "status": 503,
        "headers": {"Retry-After": "Fri, 31 Dec 99999 23:59:59 GMT"},
        "times": 1,
    },
    "400 with a code beyond 32 bits and a NUL in the message": {
        "status": 400,
        "body_raw": (
            '{"error": {"status": 400, "code": 1099511627776, "message": "bad\\u0000 \\u001b[2Jthing"}}'
        ),
        "content_type": "application/json",
    },
    "422 with a string code and a 100 kB message": {
        "status": 422,
        "body_raw": '{"error": {"status": 422, "code": "E42", "message": "' + "x" * 100_000 + '"}}',
        "content_type": "application/json",
    },
    "409 whose body retry_after is astronomical": {
        "status": 409,
        "body_raw": '{"error": {"status": 409, "code": 9999, "message": "m", "retry_after": 1e300}}',
        "content_type": "application/json",
    },
}


@pytest.mark.parametrize("answer", list(ODD_ANSWERS), ids=list(ODD_ANSWERS))
def test_every_linq_answer_ends_recorded_on_a_real_worker(
    world: World, deps: Deps, settings: Settings, worker: Procs, answer: str
) -> None:
    world.line()
    chat = world.chat()
    world.sim.add_fault(path=SHARE, chat_id=str(chat), **ODD_ANSWERS[answer])
    done = cardshare(settings, "share", str(chat))
    assert done.returncode == 0, done.stderr
    wait_until(lambda: settled(deps, chat), 60, what=f"chat-day of {answer} recorded")
    row = day_of(deps, chat)
    assert row is not None
    assert row["lost_claims"] == 0, row  # no exception in our code is ever taken for a crash
    for a in attempt_rows(deps, chat):
        assert a["finished_at"] is not None, a
        assert a["trace_id"] is None or len(a["trace_id"]) <= bounds.TRACE_ID_MAX
        assert a["error"] is None or (len(a["error"]) <= bounds.ERROR_MAX and "\x00" not in a["error"])
        assert a["linq_code"] is None or bounds.INT32_MIN <= a["linq_code"] <= bounds.INT32_MAX
        assert a["retry_after_s"] is None or 0 <= a["retry_after_s"] <= bounds.RETRY_AFTER_MAX_S
    if answer.startswith("2xx"):
        assert row["status"] == "succeeded"
        assert world.sim.share_count(str(chat)) == 1
        assert attempt_rows(deps, chat)[-1]["http_status"] == 204
    # Settled means settled: another run of the same day never calls Linq again after a 2xx.
    if row["status"] == "succeeded":
        again = cardshare(settings, "share", str(chat), "--wait")
        assert again.returncode == 1
        assert world.sim.share_count(str(chat)) == 1


def test_a_2xx_whose_metadata_cannot_be_stored_is_still_recorded_once(
    world: World, deps: Deps, settings: Settings, worker: Procs
) -> None:
    """The attempt row refuses every update (a trigger stands in for any non-connectivity
    failure of the record statement): the day is still recorded succeeded, without metadata,
    not left claimed, not charged as a crash, and Linq is not called again."""
    world.line()
    chat = world.chat()
    with transaction(deps.sessions) as s:
        s.execute(
            text(
                f"""
                CREATE FUNCTION refuse_attempt_update() RETURNS trigger LANGUAGE plpgsql AS $$
                BEGIN
                    IF NEW.chat_id = '{chat}'::uuid THEN
                        RAISE EXCEPTION 'metadata refused' USING ERRCODE = 'check_violation';
                    END IF;
                    RETURN NEW;
                END $$;
                """
            )
        )
        s.execute(
            text(
                "CREATE TRIGGER refuse_attempt_update BEFORE UPDATE ON attempts "
                "FOR EACH ROW EXECUTE FUNCTION refuse_attempt_update()"
            )
        )
    done = cardshare(settings, "share", str(chat))
    assert done.returncode == 0, done.stderr
    wait_until(lambda: settled(deps, chat), 60, what="the day recorded")
    row = day_of(deps, chat)
    assert row is not None
    assert row["status"] == "succeeded", row
    assert row["lost_claims"] == 0
    assert world.sim.share_count(str(chat)) == 1
    recover = cardshare(settings, "recover")
    assert recover.returncode == 0, recover.stderr
    again = cardshare(settings, "share", str(chat), "--wait")
    assert again.returncode == 1
    assert world.sim.share_count(str(chat)) == 1


def test_an_inconsistent_429_does_not_confirm_an_unknown_share(
    world: World, deps: Deps, settings: Settings, today: dt.date
) -> None:
    """An unknown attempt more than 300 s before the 429: the 429 is not the share window's
    answer, so nothing is confirmed; the day stays open and the next run shares."""
    world.line()
    chat = world.chat()
    token = uuid.uuid4()
    with transaction(deps.sessions) as s:
        s.execute(
            text(
                "INSERT INTO share_days (chat_id, day, status, lease_until, claim_token, claims, attempts) "
                "VALUES (:c, :d, 'unknown', now() - interval '1 second', :t, 1, 1)"
            ),
            {"c": chat, "d": today, "t": token},
        )
        s.execute(
            text(
                "INSERT INTO attempts (chat_id, day, attempt_no, claim_token, started_at, outcome) "
                "VALUES (:c, :d, 1, :t, now() - interval '301 seconds', 'unknown')"
            ),
            {"c": chat, "d": today, "t": token},
        )
    world.sim.add_fault(path=SHARE, chat_id=str(chat), status=429, retry_after=1, times=1)
    first = cardshare(settings, "share", str(chat), "--wait")
    row = day_of(deps, chat)
    assert row is not None
    assert not row["confirmed_by_rate_limit"], (row, first.stdout, first.stderr)
    # Within the window (a fresh unknown attempt), the same 429 does confirm.
    other = world.chat()
    token2 = uuid.uuid4()
    with transaction(deps.sessions) as s:
        s.execute(
            text(
                "INSERT INTO share_days (chat_id, day, status, lease_until, claim_token, claims, attempts) "
                "VALUES (:c, :d, 'unknown', now() - interval '1 second', :t, 1, 1)"
            ),
            {"c": other, "d": today, "t": token2},
        )
        s.execute(
            text(
                "INSERT INTO attempts (chat_id, day, attempt_no, claim_token, started_at, outcome) "
                "VALUES (:c, :d, 1, :t, now() - interval '60 seconds', 'unknown')"
            ),
            {"c": other, "d": today, "t": token2},
        )
    world.sim.add_fault(path=SHARE, chat_id=str(other), status=429, retry_after=1, times=1)
    second = cardshare(settings, "share", str(other), "--wait")
    assert second.returncode == 0, second.stderr
    row2 = day_of(deps, other)
    assert row2 is not None
    assert row2["status"] == "succeeded", row2
    assert row2["confirmed_by_rate_limit"], row2
