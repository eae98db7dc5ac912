"""Sentry and OpenTelemetry, each off by default and imported only when switched on.

- **Sentry** (`pip install 'cardshare[sentry]'`, on when SENTRY_DSN is set): errors and their
  context from every role, Celery's integration (task failures, and beat's schedule as cron
  monitors with check-ins, CARDSHARE_SENTRY_MONITORS). No local variables and no PII are sent,
  and every registered secret (API key, webhook secrets, passwords) is masked in each event
  before it leaves, as in our logs.
- **OpenTelemetry** (`pip install 'cardshare[otel]'`, on when OTEL_EXPORTER_OTLP_ENDPOINT is
  set): traces over OTLP/HTTP, with Celery, httpx and psycopg instrumented, and cardshare's own
  spans around each share and each Linq call (`tracing`: chat id, day, attempt, outcome, HTTP
  status and Linq's trace id). The SDK reads the rest of its OTEL_* variables itself.

Neither changes what a share does: both export in background threads, and an unreachable
backend only costs their retries (tests/integration/ops/test_observability.py). Each long-running
role sets them up once, as the libraries ask: a worker at `worker_init`, beat at `beat_init`
(queue.signals), the receiver when it starts. Prefork children inherit both (their exporter
threads restart after the fork by themselves).
"""

from __future__ import annotations

import json
import logging
import os
from importlib import metadata
from typing import Any

from worker.config import Settings
from worker.errors import ConfigError
from worker.logs import event, redact, register_secret
from worker.ops import tracing

log = logging.getLogger("cardshare.observability")

# Header values the HTTP instrumentations must never record, whatever OTEL_* asks them to capture.
SANITIZED_HEADERS = "authorization,x-linq-integration-token,webhook-signature,x-webhook-signature,cookie"

_done: dict[str, Any] = {}


def setup(settings: Settings, role: str) -> list[str]:
    """Switch on what the settings ask for; returns what is on ("sentry", "otel"). The caller
    logs it (`announce`) once logging is set up: a worker's `worker_init` comes before that."""
    if settings.sentry_dsn and "sentry" not in _done:
        _setup_sentry(settings, role)
    if settings.otel_endpoint and "otel" not in _done:
        _setup_otel(settings, role)
    return [name for name in ("sentry", "otel") if name in _done]


def announce(settings: Settings, role: str) -> None:
    """One line saying what is on (nothing when both are off)."""
    on = [name for name in ("sentry", "otel") if name in _done]
    if on:
        event(
            log,
            "observability.on",
            role=role,
            sentry="sentry" in on,
            otel_endpoint=settings.otel_endpoint if "otel" in on else None,
            sentry_environment=settings.sentry_environment or None,
        )


# --------------------------------------------------------------------------- Sentry


def scrub(payload: Any) -> Any:
    """`payload` (a Sentry event) with every registered secret masked, wherever it appears."""
    return json.loads(redact(json.dumps(payload, default=str)))


def _setup_sentry(settings: Settings, role: str) -> None:
    try:
        import sentry_sdk
        from sentry_sdk.integrations.celery import CeleryIntegration
    except ImportError:
        raise ConfigError(
            Settings.env_name("sentry_dsn"),
            "is set but sentry-sdk is not installed: pip install 'cardshare[sentry]'",
        ) from None
    dsn = settings.sentry_dsn.get()
    register_secret(dsn)

    def before_send(payload: Any, hint: Any) -> Any:
        return scrub(payload)

    sentry_sdk.init(
        dsn=dsn,
        environment=settings.sentry_environment or None,
        release=_version(),
        server_name=role,
        traces_sample_rate=settings.sentry_traces_sample_rate,
        send_default_pii=False,
        include_local_variables=False,  # a frame's locals can hold a request's Authorization header
        before_send=before_send,
        before_send_transaction=before_send,
        integrations=[CeleryIntegration(monitor_beat_tasks=settings.sentry_monitors)],
    )
    _done["sentry"] = True


# --------------------------------------------------------------------------- OpenTelemetry


def _setup_otel(settings: Settings, role: str, exporter: Any = None) -> Any:
    try:
        from opentelemetry import trace
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
        from opentelemetry.instrumentation.celery import CeleryInstrumentor
        from opentelemetry.instrumentation.httpx import HTTPXClientInstrumentor
        from opentelemetry.instrumentation.psycopg import PsycopgInstrumentor
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import SpanProcessor, TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor, SimpleSpanProcessor
        from opentelemetry.sdk.trace.sampling import ParentBasedTraceIdRatio
    except ImportError:
        raise ConfigError(
            Settings.env_name("otel_endpoint"),
            "is set but OpenTelemetry is not installed: pip install 'cardshare[otel]'",
        ) from None
    os.environ.setdefault("OTEL_INSTRUMENTATION_HTTP_CAPTURE_HEADERS_SANITIZE_FIELDS", SANITIZED_HEADERS)
    resource = Resource.create(
        {
            "service.name": os.environ.get("OTEL_SERVICE_NAME") or f"cardshare-{role}",
            "service.version": _version(),
        }
    )
    provider = _done.get("provider")
    if provider is None:
        sampler = ParentBasedTraceIdRatio(settings.otel_sample_ratio)
        provider = TracerProvider(resource=resource, sampler=sampler)
        trace.set_tracer_provider(provider)
        CeleryInstrumentor().instrument(tracer_provider=provider)  # type: ignore[no-untyped-call]
        HTTPXClientInstrumentor().instrument(tracer_provider=provider)
        # enable_commenter off: no SQL comments (they would defeat the prepared statements).
        PsycopgInstrumentor().instrument(tracer_provider=provider, enable_commenter=False)
        provider.add_span_processor(_carry_processor(SpanProcessor)())
        _done["provider"] = provider
    if exporter is None:
        endpoint = (settings.otel_endpoint or "").rstrip("/")
        # The SDK's own timeout and retries apply; the endpoint's path is OTLP/HTTP's.
        provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter(endpoint=f"{endpoint}/v1/traces")))
    else:
        provider.add_span_processor(SimpleSpanProcessor(exporter))  # tests: an in-memory exporter
    _done["otel"] = True
    tracing.install(provider.get_tracer("cardshare"))
    return provider


def _carry_processor(base: Any) -> Any:
    class Carry(base):  # type: ignore[misc]
        """Stamps `tracing.carried` (the chat id inside a share) on every span as it starts."""

        def on_start(self, span: Any, parent_context: Any = None) -> None:
            attributes = tracing.carried.get()
            if attributes:
                span.set_attributes(attributes)

    return Carry


def _version() -> str:
    try:
        return f"cardshare@{metadata.version('cardshare')}"
    except metadata.PackageNotFoundError:
        return "cardshare@unknown"


def shutdown() -> None:
    """Flush and switch both off again (tests; a process's exit flushes by itself)."""
    tracing.install(None)
    provider = _done.pop("provider", None)
    if provider is not None:
        from opentelemetry.instrumentation.celery import CeleryInstrumentor
        from opentelemetry.instrumentation.httpx import HTTPXClientInstrumentor
        from opentelemetry.instrumentation.psycopg import PsycopgInstrumentor

        CeleryInstrumentor().uninstrument()  # type: ignore[no-untyped-call]
        HTTPXClientInstrumentor().uninstrument()
        PsycopgInstrumentor().uninstrument()
        provider.shutdown()
    _done.pop("otel", None)
    if _done.pop("sentry", None):
        import sentry_sdk

        sentry_sdk.get_client().close()
