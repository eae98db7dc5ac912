"""Spans around the share path, for OpenTelemetry when `observability` switched it on.

Off (the default, or without the `otel` extra) every `span()` is one shared no-op object: the
share path pays a function call, imports nothing and records nothing. On, `span()` starts a
real span on the tracer `observability` installed, with cardshare's attributes (`cardshare.*`,
`linq.trace_id`); the attributes are ids and outcomes only, never a secret.
"""

from __future__ import annotations

import contextvars
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, Protocol

# Attributes every span started inside a `span(..., carry=True)` gets too (the chat id of a
# share on its SQL and HTTP spans): stamped by observability's span processor.
carried: contextvars.ContextVar[dict[str, Any]] = contextvars.ContextVar("cardshare_span_attrs", default={})  # noqa: B039


class Span(Protocol):
    def set(self, **attributes: Any) -> None: ...


class _NoSpan:
    def set(self, **attributes: Any) -> None:
        return None


_NO_SPAN = _NoSpan()
# The OpenTelemetry tracer, once `observability.setup` installed one (None: tracing is off).
_tracer: Any = None


def install(tracer: Any) -> None:
    global _tracer
    _tracer = tracer


def enabled() -> bool:
    return _tracer is not None


class _OtelSpan:
    def __init__(self, span: Any) -> None:
        self._span = span

    def set(self, **attributes: Any) -> None:
        for key, value in attributes.items():
            if value is not None:
                self._span.set_attribute(_name(key), value)


def _name(key: str) -> str:
    # `linq_trace_id` -> `linq.trace_id`; everything else is ours: `chat_id` -> `cardshare.chat_id`.
    if key.startswith("linq_"):
        return "linq." + key.removeprefix("linq_")
    if key.startswith("http_"):
        return "http." + key.removeprefix("http_")
    return "cardshare." + key


@contextmanager
def span(name: str, *, carry: bool = False, **attributes: Any) -> Iterator[Span]:
    """A span named `name` (a child of the current one: the Celery task's) with `attributes`.
    With `carry`, the attributes also go on that parent and on every span started inside."""
    tracer = _tracer
    if tracer is None:
        yield _NO_SPAN
        return
    named = {_name(k): v for k, v in attributes.items() if v is not None}
    token = None
    if carry:
        from opentelemetry import trace  # installed: `observability` put a tracer here

        trace.get_current_span().set_attributes(named)
        token = carried.set({**carried.get(), **named})
    try:
        with tracer.start_as_current_span(name, attributes=named) as real:
            yield _OtelSpan(real)
    finally:
        if token is not None:
            carried.reset(token)
