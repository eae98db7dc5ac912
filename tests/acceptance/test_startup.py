"""The start-up promise (issue 17.5): `cardshare status`, `history`, `share` and `recover` run
against the real servers without importing what they never use. The Linq SDK (and the pydantic
models it brings), Alembic, uvicorn and Starlette each cost a command's start a measurable
share (python -X importtime on the 2-core box; see worker.entry and worker.http_server); these
tests fail if one of them comes back through an import at module level. Timings are not asserted
here: bench/scale.py measures them (bench/startup_probe.py)."""

from __future__ import annotations

import datetime as dt
import json
import subprocess
import sys
from dataclasses import dataclass

import pytest
import redis
from sqlalchemy import text

from tests.support.cli import env_for
from tests.support.world import World
from worker.config import Settings
from worker.deps import Deps
from worker.keys import SHARE_QUEUE
from worker.store.session import transaction

pytestmark = pytest.mark.acceptance

HEAVY = ("linq", "pydantic", "alembic", "uvicorn", "starlette")
# What the read-only commands (`status`, `history`, `check`) skip as well: Celery (they queue nothing),
# httpx (they call no one) and the embedded servers' module (the servers are running).
# SQLAlchemy too: they read through one psycopg connection (worker/store/sql.py).
READ_ONLY_SKIPS = (
    "celery",
    "kombu",
    "httpx",
    "worker.embedded",
    "worker.queue.app",
    "worker.linq",
    "sqlalchemy",
)
# Loaded by `status`, but only after its database reads: not there at the first connection.
AFTER_FIRST_QUERY = ("redis", "rich", "sqlalchemy", "celery")

# Runs one command through the console script's entry point and prints, after it, the heavy
# top-level packages that ended up in sys.modules (at exit, so the command's own work counts).
PROBE = """
import atexit, gc, json, sys
import psycopg
_connect = psycopg.Connection.connect.__func__
_at_first = []
def _marking(cls, *args, **kwargs):
    if not _at_first:
        _at_first.append(sorted({m.split('.')[0] for m in sys.modules} & set(LATER)))
    return _connect(cls, *args, **kwargs)
psycopg.Connection.connect = classmethod(_marking)
psycopg.connect = lambda *a, **k: _marking(psycopg.Connection, *a, **k)
def _report():
    sys.stderr.write('FIRST ' + json.dumps(_at_first[0] if _at_first else None) + '\\n')
    heavy = sorted({m.split('.')[0] for m in sys.modules} & set(HEAVY))
    skipped = sorted(m for m in SKIPS if m in sys.modules)
    sys.stderr.write('\\nLOADED ' + json.dumps(heavy) + '\\n')
    sys.stderr.write('ALSO ' + json.dumps(skipped) + '\\n')
    sys.stderr.write('FROZEN ' + str(gc.get_freeze_count()) + '\\n')
atexit.register(_report)
sys.argv = ['cardshare', *sys.argv[1:]]
from worker.entry import main
main()
"""
PROBE = PROBE.replace("HEAVY", repr(HEAVY)).replace("SKIPS", repr(READ_ONLY_SKIPS))
PROBE = PROBE.replace("LATER", repr(AFTER_FIRST_QUERY))


@dataclass
class Probe:
    done: subprocess.CompletedProcess[str]
    heavy: list[str]  # of HEAVY, what the command loaded
    also: list[str]  # of READ_ONLY_SKIPS, what it loaded
    frozen: int  # objects gc.freeze() moved out of the collector's way before teardown
    first: list[str] | None  # of AFTER_FIRST_QUERY, what was loaded when it first connected


def loaded(settings: Settings, *args: str) -> Probe:
    done = subprocess.run(
        [sys.executable, "-c", PROBE, *args],
        env=env_for(settings),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )

    def marked(prefix: str) -> str:
        lines = [line for line in done.stderr.splitlines() if line.startswith(prefix)]
        assert lines, done.stderr
        return lines[-1].removeprefix(prefix)

    return Probe(
        done,
        json.loads(marked("LOADED ")),
        json.loads(marked("ALSO ")),
        int(marked("FROZEN ")),
        json.loads(marked("FIRST ")),
    )


def test_status_history_check_share_and_recover_load_no_sdk_server_or_alembic(
    world: World, settings: Settings
) -> None:
    world.line()
    chat = str(world.chat())
    for args in (
        ("status", "--json"),
        ("history", chat),
        ("check",),
        ("recover",),
        ("share", chat),
    ):
        probe = loaded(settings, *args)
        # `check` exits 1 when the day is not clean: the chat is due and nobody shared it yet.
        assert probe.done.returncode == (1 if args[0] == "check" else 0), (args, probe.done)
        if args[0] == "check":
            assert "missed 1," in probe.done.stdout, probe.done.stdout
        assert probe.heavy == [], f"cardshare {' '.join(args)} imported {probe.heavy}"
        if args[0] != "share":
            # A recovery with nothing to re-queue publishes nothing: no Celery, no SQLAlchemy.
            assert probe.also == [], f"cardshare {' '.join(args)} imported {probe.also}"
        # Its first query waits for nothing but psycopg, click and cardshare's own modules.
        assert probe.first == [], f"cardshare {' '.join(args)} had loaded {probe.first} by then"
        # The interpreter's teardown skips what the command loaded (worker.entry: ~0.45 s).
        assert probe.frozen > 10_000, (args, probe.frozen)
    # `share` queued its message through Celery, after the database had said the chat is due.
    assert "enqueued chat" in probe.done.stdout, probe.done
    assert "celery" in probe.also
    # The probe does see them when they are loaded: bare `cardshare --help` loads the whole group,
    # the status page's Starlette with it.
    probe = loaded(settings, "--help")
    assert probe.done.returncode == 0, probe.done.stderr
    assert "starlette" in probe.heavy
    assert probe.frozen > 10_000
    # The table (rich) and Redis's part come after the database's reads.
    probe = loaded(settings, "status")
    assert probe.done.returncode == 0, probe.done.stderr
    assert probe.first == []
    assert probe.also == []


def test_recover_publishes_through_celery_only_when_it_has_something_to_requeue(
    world: World, settings: Settings, deps: Deps, today: dt.date
) -> None:
    """The plain path's recovery re-queues a chat-day whose claim expired, through Celery (loaded
    then, not before its first query), onto the real queue; a second pass finds nothing."""
    world.line()
    chat = world.chat()
    day = today
    with transaction(deps.sessions) as s:
        s.execute(
            text(
                "INSERT INTO share_days (chat_id, day, status, lease_until, claims, task_id) "
                "VALUES (:c, :d, 'claimed', now() - interval '1 minute', 1, 'dead')"
            ),
            {"c": chat, "d": day},
        )
    assert settings.redis_url is not None
    client = redis.Redis.from_url(settings.redis_url)
    client.delete(SHARE_QUEUE)
    probe = loaded(settings, "recover")
    assert probe.done.returncode == 0, probe.done
    assert f"recover {day}: scanned 0, enqueued 0, re-enqueued 1" in probe.done.stdout
    assert probe.first == []
    assert "celery" in probe.also
    messages = [json.loads(m) for m in client.lrange(SHARE_QUEUE, 0, -1)]
    assert [m["headers"]["argsrepr"] for m in messages] == [f"('{chat}', '{day}')"]
    with deps.sessions() as s:
        status, lost = s.execute(
            text("SELECT status, lost_claims FROM share_days WHERE chat_id = :c"), {"c": chat}
        ).one()
    assert (status, lost) == ("queued", 1)
    again = loaded(settings, "recover")
    assert "re-enqueued 0" in again.done.stdout, again.done
    assert again.also == []
    client.close()
