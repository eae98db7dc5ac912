"""A publisher for a `cardshare` command that may have nothing to publish (`recover`, `share`):
Celery is imported, configured and connected on the first message, not before.

Importing Celery and the app costs ~0.5 s of a command's start on the 2-core box (bench/README.md
§6); a recovery pass that finds nothing to re-queue never pays it.
"""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Sequence
from types import TracebackType
from typing import Any

from worker.config import Settings


class LazyPublisher:
    """A `sharing.passes.Publish` that opens `queue.publish.Publisher` on first use."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._publisher: Any = None

    def _open(self) -> Any:
        if self._publisher is None:
            from worker.queue import app as queue_app
            from worker.queue.publish import Publisher

            self._publisher = Publisher(queue_app.configure(self.settings)).__enter__()
        return self._publisher

    def __call__(self, chat_ids: Sequence[uuid.UUID], day: dt.date) -> int:
        return int(self._open()(chat_ids, day))

    def one(self, chat_id: uuid.UUID, day: dt.date) -> str:
        """Publish one chat-day's message; its task id."""
        return str(self._open().one(chat_id, day))

    @property
    def opened(self) -> bool:
        """Did anything get published (and Celery get imported)?"""
        return self._publisher is not None

    def __enter__(self) -> LazyPublisher:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._publisher is not None:
            publisher, self._publisher = self._publisher, None
            publisher.__exit__(exc_type, exc, tb)
