"""`cardshare` loads only the module of the command it runs: the table in `worker.entry` must
name, for every command of the full group, the module that registers it."""

from __future__ import annotations

import importlib
import subprocess
import sys

from worker import entry
from worker.cli.common import group_of
from worker.cli.main import cli


def test_every_command_is_dispatched_to_the_module_that_defines_it() -> None:
    names = set(cli.commands)
    # `health` never loads a CLI module at all (worker.ops.healthcheck).
    assert set(entry.COMMANDS) == names - {"health"}
    for command, module in entry.COMMANDS.items():
        group = group_of(importlib.import_module(module).register)
        assert command in group.commands, f"{module} does not register {command}"
        assert group.commands[command] is cli.commands[command]


def test_a_command_loads_neither_the_other_commands_nor_the_linq_sdk() -> None:
    """`cardshare status --help` through the real entry point: no demo, simulator, card desk,
    webhook receiver or Linq SDK is imported (each costs start-up time; see worker.entry)."""
    code = (
        "import sys; sys.argv = ['cardshare', 'status', '--help']\n"
        "from worker.entry import main\n"
        "try:\n    main()\nexcept SystemExit:\n    pass\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('linq', 'pydantic', 'alembic')"
        " or m in ('worker.demo', 'worker.cli.cards', 'worker.ingest.webhooks', 'worker.cli.main')))"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0, done.stderr
    assert "Usage: cardshare status" in done.stdout
    assert done.stdout.strip().splitlines()[-1] == "[]"
