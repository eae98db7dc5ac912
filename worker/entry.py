"""The `cardshare` executable: `cardshare health` without loading the rest of the CLI.

Healthchecks run every 30 s in every container; see `worker.cli_health` for what that saves.
Everything else goes to `worker.cli.main`.
"""

from __future__ import annotations

import sys


def main() -> None:
    if sys.argv[1:2] == ["health"]:
        from worker.cli_health import health

        health.main(args=sys.argv[2:], prog_name="cardshare health")  # exits
    from worker.cli import main as cli_main

    cli_main()
