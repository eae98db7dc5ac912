"""One structured line per event: JSON when not on a terminal, key=value on one.

Context (task id, chat id, day) rides in contextvars bound at task start, so every line a
task writes carries it. Secrets never reach a line: a filter masks any registered secret
value wherever it would appear.
"""

from __future__ import annotations

import contextvars
import datetime as dt
import json
import logging
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

_context: contextvars.ContextVar[dict[str, Any] | None] = contextvars.ContextVar(
    "cardshare_log", default=None
)
_secrets: set[str] = set()
_secrets_lock = threading.Lock()

RESERVED = set(vars(logging.makeLogRecord({}))) | {"message", "asctime"}


def register_secret(value: str | None) -> None:
    """Mask `value` in every log line from now on (API key, webhook secrets)."""
    if value and len(value) >= 4:
        with _secrets_lock:
            _secrets.add(value)


def redact(text: str) -> str:
    for secret in _secrets:
        if secret in text:
            text = text.replace(secret, "****")
    return text


@contextmanager
def bound(**fields: Any) -> Iterator[None]:
    """Add fields to every log line written inside the block (this thread/context)."""
    current = _context.get() or {}
    token = _context.set({**current, **{k: v for k, v in fields.items() if v is not None}})
    try:
        yield
    finally:
        _context.reset(token)


def bind(**fields: Any) -> contextvars.Token[dict[str, Any] | None]:
    current = _context.get() or {}
    return _context.set({**current, **{k: v for k, v in fields.items() if v is not None}})


def unbind(token: contextvars.Token[dict[str, Any] | None]) -> None:
    _context.reset(token)


def event(logger: logging.Logger, name: str, level: int = logging.INFO, **fields: Any) -> None:
    """Log one event with its key; fields go out as structured data, not in the message."""
    if logger.isEnabledFor(level):
        logger.log(level, name, extra={"event": name, "fields": fields})


def _fields_of(record: logging.LogRecord) -> dict[str, Any]:
    out: dict[str, Any] = dict(_context.get() or {})
    extra = getattr(record, "fields", None)
    if isinstance(extra, dict):
        out.update(extra)
    for key, value in vars(record).items():
        if key not in RESERVED and key not in {"fields", "event"} and not key.startswith("_"):
            out.setdefault(key, value)
    return out


def _jsonable(value: Any) -> Any:
    if isinstance(value, dt.datetime | dt.date):
        return value.isoformat()
    if isinstance(value, str | int | float | bool) or value is None:
        return value
    return str(value)


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        doc: dict[str, Any] = {
            "ts": dt.datetime.fromtimestamp(record.created, dt.UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "event": getattr(record, "event", None) or record.getMessage(),
        }
        if getattr(record, "event", None) is None:
            doc["event"] = "log"
            doc["message"] = record.getMessage()
        for key, value in _fields_of(record).items():
            doc.setdefault(key, _jsonable(value))
        if record.exc_info:
            doc["exc"] = self.formatException(record.exc_info)
        return redact(json.dumps(doc, separators=(",", ":")))


class TextFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        ts = dt.datetime.fromtimestamp(record.created, dt.UTC).strftime("%H:%M:%S")
        head = getattr(record, "event", None) or record.getMessage()
        pairs = " ".join(f"{k}={_jsonable(v)}" for k, v in _fields_of(record).items())
        line = f"{ts} {record.levelname.lower():<7} {head} {pairs}".rstrip()
        if record.exc_info:
            line += "\n" + self.formatException(record.exc_info)
        return redact(line)


def configure(level: str = "INFO", fmt: str = "auto", stream: Any = None) -> None:
    """Install our handler on the root logger (idempotent)."""
    stream = stream or sys.stderr
    use_json = fmt == "json" or (fmt == "auto" and not getattr(stream, "isatty", lambda: False)())
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter() if use_json else TextFormatter())
    handler.set_name("cardshare")
    root = logging.getLogger()
    for existing in list(root.handlers):
        if existing.get_name() == "cardshare":
            root.removeHandler(existing)
    root.addHandler(handler)
    root.setLevel(level)
    # httpx logs every request URL at INFO; our attempt rows already say it.
    logging.getLogger("httpx").setLevel(logging.WARNING)
    logging.getLogger("httpcore").setLevel(logging.WARNING)
