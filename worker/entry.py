"""The `cardshare` executable: `cardshare health` without loading the rest of the CLI.

Healthchecks run every 30 s in every container; see `worker.ops.healthcheck` for what that
saves. Everything else goes to `worker.cli.main`.
"""

from __future__ import annotations

import sys


def main() -> None:
    # The imports below are inside on purpose: the whole CLI costs about 1.2 s of CPU to import,
    # `cardshare health` about 0.2 s (measured on the 2-core box; see worker.ops.healthcheck).
    if sys.argv[1:2] == ["health"]:
        from worker.ops.healthcheck import health

        health.main(args=sys.argv[2:], prog_name="cardshare health")  # exits
    from worker.cli.main import main as cli_main

    cli_main()
