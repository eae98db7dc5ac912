"""The start-up promise (issue 17.5): `cardshare status`, `history`, `share` and `recover` run
against the real servers without importing what they never use. The Linq SDK (and the pydantic
models it brings), Alembic, uvicorn and Starlette each cost a command's start a measurable
share (python -X importtime on the 2-core box; see worker.entry and worker.http_server); these
tests fail if one of them comes back through an import at module level. Timings are not asserted
here: bench/scale.py measures them (bench/startup_probe.py)."""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import dataclass

import pytest

from tests.support.cli import env_for
from tests.support.world import World
from worker.config import Settings

pytestmark = pytest.mark.acceptance

HEAVY = ("linq", "pydantic", "alembic", "uvicorn", "starlette")
# What the read-only commands (`status`, `history`) skip as well: Celery (they queue nothing),
# httpx (they call no one) and the embedded servers' module (the servers are running).
READ_ONLY_SKIPS = ("celery", "kombu", "httpx", "worker.embedded", "worker.queue.app", "worker.linq")

# Runs one command through the console script's entry point and prints, after it, the heavy
# top-level packages that ended up in sys.modules (at exit, so the command's own work counts).
PROBE = """
import atexit, gc, json, sys
def _report():
    heavy = sorted({m.split('.')[0] for m in sys.modules} & set(HEAVY))
    skipped = sorted(m for m in SKIPS if m in sys.modules)
    sys.stderr.write('\\nLOADED ' + json.dumps(heavy) + '\\n')
    sys.stderr.write('ALSO ' + json.dumps(skipped) + '\\n')
    sys.stderr.write('FROZEN ' + str(gc.get_freeze_count()) + '\\n')
atexit.register(_report)
sys.argv = ['cardshare', *sys.argv[1:]]
from worker.entry import main
main()
""".replace("HEAVY", repr(HEAVY)).replace("SKIPS", repr(READ_ONLY_SKIPS))


@dataclass
class Probe:
    done: subprocess.CompletedProcess[str]
    heavy: list[str]  # of HEAVY, what the command loaded
    also: list[str]  # of READ_ONLY_SKIPS, what it loaded
    frozen: int  # objects gc.freeze() moved out of the collector's way before teardown


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

    return Probe(done, json.loads(marked("LOADED ")), json.loads(marked("ALSO ")), int(marked("FROZEN ")))


def test_status_history_share_and_recover_load_no_sdk_server_or_alembic(
    world: World, settings: Settings
) -> None:
    world.line()
    chat = str(world.chat())
    for args in (
        ("status", "--json"),
        ("history", chat),
        ("share", chat),
        ("recover",),
    ):
        probe = loaded(settings, *args)
        assert probe.done.returncode == 0, (args, probe.done.stderr)
        assert probe.heavy == [], f"cardshare {' '.join(args)} imported {probe.heavy}"
        if args[0] in ("status", "history"):
            assert probe.also == [], f"cardshare {' '.join(args)} imported {probe.also}"
        # The interpreter's teardown skips what the command loaded (worker.entry: ~0.45 s).
        assert probe.frozen > 10_000, (args, probe.frozen)
    # The probe does see them when they are loaded: bare `cardshare --help` loads the whole group,
    # the status page's Starlette with it, and `share` queues through Celery.
    probe = loaded(settings, "--help")
    assert probe.done.returncode == 0, probe.done.stderr
    assert "starlette" in probe.heavy
    assert probe.frozen > 10_000
    probe = loaded(settings, "share", chat)
    assert "celery" in probe.also
