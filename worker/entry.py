"""The `cardshare` executable: each command loads only the module that defines it.

Loading every command module costs a command's start what none of them needs: the demo, the
simulator, the webhook receiver, the card desk (measured with `python -X importtime` on the
2-core box: the whole CLI ~1.2 s of CPU, `worker.cli.ops` alone about half of it). So the first
argument picks the module here, and only `cardshare`, `--help` or an unknown command load the
whole group (`worker.cli.main`). `cardshare health` loads only the healthcheck (see
`worker.ops.healthcheck`). `tests/unit/test_entry.py` keeps the table in step with the group.
"""

from __future__ import annotations

import gc
import importlib
import sys

# Command -> the module whose `register` adds it to the group.
COMMANDS = {
    "db": "worker.cli.db",
    "share": "worker.cli.share",
    "sweep": "worker.cli.share",
    "recover": "worker.cli.share",
    "worker": "worker.cli.run",
    "beat": "worker.cli.run",
    "simulator": "worker.cli.dev",
    "demo": "worker.cli.dev",
    "card": "worker.cli.cards",
    "contacts": "worker.cli.cards",
    "webhooks": "worker.cli.ingest",
    "sync": "worker.cli.ingest",
    "import": "worker.cli.ingest",
    "status": "worker.cli.reads",
    "count": "worker.cli.ops",
    "history": "worker.cli.reads",
    "check": "worker.cli.reads",
    "web": "worker.cli.ops",
    "line": "worker.cli.lines",
    "warnings": "worker.cli.lines",
}


def main() -> None:
    try:
        dispatch()
    finally:
        # The interpreter's teardown walks every object the imports made, collection after
        # collection: ~0.45 s of a short command's wall time on the 2-core box (importing the
        # CLI then exiting: 1.69 s, 1.14 s with this; bench/README.md §6). Frozen objects are
        # skipped; atexit handlers (the embedded servers' stop) still run.
        gc.freeze()


def dispatch() -> None:
    # The imports below are inside on purpose: the whole CLI costs about 1.2 s of CPU to import,
    # `cardshare health` about 0.2 s (measured on the 2-core box; see worker.ops.healthcheck).
    command = sys.argv[1] if len(sys.argv) > 1 else None
    if command == "health":
        from worker.ops.healthcheck import health

        health.main(args=sys.argv[2:], prog_name="cardshare health")  # exits
    module = COMMANDS.get(command or "")
    if module is not None:
        from worker.cli.common import group_of, run

        run(group_of(importlib.import_module(module).register), sys.argv[1:])
        return
    from worker.cli.main import main as cli_main

    cli_main()
