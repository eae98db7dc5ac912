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

import pytest

from tests.support.cli import env_for
from tests.support.world import World
from worker.config import Settings

pytestmark = pytest.mark.acceptance

HEAVY = ("linq", "pydantic", "alembic", "uvicorn", "starlette")

# Runs one command through the console script's entry point and prints, after it, the heavy
# top-level packages that ended up in sys.modules (at exit, so the command's own work counts).
PROBE = """
import atexit, json, sys
def _report():
    heavy = sorted({m.split('.')[0] for m in sys.modules} & set(HEAVY))
    sys.stderr.write('\\nLOADED ' + json.dumps(heavy) + '\\n')
atexit.register(_report)
sys.argv = ['cardshare', *sys.argv[1:]]
from worker.entry import main
main()
""".replace("HEAVY", repr(HEAVY))


def loaded(settings: Settings, *args: str) -> tuple[subprocess.CompletedProcess[str], list[str]]:
    done = subprocess.run(
        [sys.executable, "-c", PROBE, *args],
        env=env_for(settings),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    marker = [line for line in done.stderr.splitlines() if line.startswith("LOADED ")]
    assert marker, done.stderr
    return done, json.loads(marker[-1].removeprefix("LOADED "))


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
        done, heavy = loaded(settings, *args)
        assert done.returncode == 0, (args, done.stderr)
        assert heavy == [], f"cardshare {' '.join(args)} imported {heavy}"
    # The probe does see them when they are loaded: bare `cardshare --help` loads the whole group,
    # the status page's Starlette with it.
    done, heavy = loaded(settings, "--help")
    assert done.returncode == 0, done.stderr
    assert "starlette" in heavy
