"""`cardshare worker` and `cardshare beat`: Celery itself, on this process's settings."""

from __future__ import annotations

from pathlib import Path

import click

from worker.cli.common import boot
from worker.queue.app import app
from worker.queue.publish import worker_args


def register(cli: click.Group) -> None:
    cli.add_command(worker)
    cli.add_command(beat)


@click.command()
@click.option(
    "--concurrency", "-c", type=int, default=None, help="Threads (default CARDSHARE_WORKER_CONCURRENCY)."
)
@click.option("--pool", type=click.Choice(["threads", "gevent", "prefork", "solo"]), default=None)
@click.option("--name", "-n", default=None, help="Worker node name (default cardshare@HOST).")
@click.option("--loglevel", "-l", default="INFO")
def worker(concurrency: int | None, pool: str | None, name: str | None, loglevel: str) -> None:
    """Run a Celery worker (starts embedded services when no URLs are set)."""
    with boot(watch=True) as b:
        app.worker_main(
            argv=worker_args(
                pool=pool or b.settings.worker_pool,
                concurrency=concurrency or b.settings.worker_concurrency,
                loglevel=loglevel,
                hostname=name,
            )
        )


@click.command()
@click.option("--loglevel", "-l", default="INFO")
def beat(loglevel: str) -> None:
    """Run Celery beat: the sweep every interval, recovery every minute. Run exactly one."""
    with boot(watch=True) as b:
        schedule = Path(b.settings.data_dir) / "celerybeat-schedule"
        schedule.parent.mkdir(parents=True, exist_ok=True)
        app.start(argv=["beat", "--schedule", str(schedule), "--loglevel", loglevel])
