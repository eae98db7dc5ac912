"""`cardshare simulator` and `cardshare demo`: the Linq simulator and the self-contained demo."""

from __future__ import annotations

import click

from worker.demo import run_demo
from worker.logs import configure as configure_logging
from worker.simulator.server import serve_forever


def register(cli: click.Group) -> None:
    cli.add_command(simulator)
    cli.add_command(demo)


@click.command()
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=8765, show_default=True, type=click.IntRange(0, 65535))
@click.option(
    "--api-key",
    envvar="LINQ_API_V3_API_KEY",
    default="sim-key",
    show_default=True,
    help="Bearer token the simulator accepts (default from LINQ_API_V3_API_KEY).",
)
def simulator(host: str, port: int, api_key: str) -> None:
    """Run the Linq simulator (for local development; never the real API)."""
    configure_logging("INFO", "text")
    serve_forever(api_key=api_key, host=host, port=port)


@click.command()
@click.option("--chats", default=300, show_default=True, type=int, help="How many chats to seed.")
@click.option("--keep", is_flag=True, help="Keep the demo's data directory for inspection.")
def demo(chats: int, keep: bool) -> None:
    """Seed a simulator and embedded services, run a worker and two sweeps, print the summary."""
    run_demo(chats=chats, keep=keep, echo=click.echo)
