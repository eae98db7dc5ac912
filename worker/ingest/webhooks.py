"""The Linq webhook receiver: verify the signature, parse, record in one short transaction.

Answers: 200 recorded / duplicate / ignored, 400 malformed body (Linq does not retry it),
401 bad, missing, stale or replayed signature, 413 oversized body, 503 database unavailable
(Linq retries 5xx for ~30 minutes, and nothing was written, so nothing is lost).
"""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import datetime as dt
import hashlib
import hmac
import logging
import math
import socket
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from zoneinfo import ZoneInfo

from sqlalchemy import exc as sa_exc
from sqlalchemy.orm import Session, sessionmaker
from standardwebhooks import Webhook, WebhookVerificationError
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from worker.config import Settings
from worker.errors import ConfigError, StoreUnavailable
from worker.http_server import address
from worker.ingest import line_events, payloads
from worker.ingest import pending as pending_store
from worker.logs import event, register_secret
from worker.ops import metrics
from worker.rules import bounds
from worker.rules.gate import LineState
from worker.sharing.first_outbound import ChatDays, FirstOutbound
from worker.store.chats import record_activity
from worker.store.ingest import Delivery, add_pending, line_of_chat, record_webhook_event
from worker.store.lines import lines, rearm_held, record_reputation, record_status
from worker.store.session import ping, transaction
from worker.store.warnings import raise_warning, resolve_warnings

log = logging.getLogger("cardshare.webhooks")

PATH = "/webhooks/linq"
TOLERANCE_S = 300  # Linq and Standard Webhooks: a delivery more than 5 minutes off is refused
MAX_BODY_BYTES = 1 << 20  # Linq's events are a few KB; refuse to buffer anything near this
# /readyz answers within the probe's timeout (3 s in deploy/kubernetes) even if PostgreSQL hangs.
READY_TIMEOUT_S = 2.5

_LIBRARY_REASONS = {
    "Missing required headers": "missing webhook-id, webhook-timestamp or webhook-signature header",
    "Invalid Signature Headers": "webhook-timestamp is not a Unix time",
    "Message timestamp too old": "webhook-timestamp is more than 5 minutes old (stale or replayed)",
    "Message timestamp too new": "webhook-timestamp is more than 5 minutes in the future",
    "No matching signature found": "webhook-signature matches none of the configured secrets",
}
_TIMESTAMP_REASONS = ("Invalid Signature Headers", "Message timestamp too old", "Message timestamp too new")


class Rejected(Exception):
    """A delivery whose signature does not hold; `reason` is one line and never holds a secret."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True)
class Verified:
    webhook_id: str | None
    delivery: str  # what identifies this exact signed request: "webhook-id.timestamp"
    scheme: str  # "standard" or "legacy"


class Verifier:
    """Standard Webhooks signatures (the `standardwebhooks` library), one per configured secret
    so a rotated secret keeps working; the legacy `X-Webhook-Signature` only when enabled."""

    def __init__(self, secrets: Sequence[str], *, legacy: bool = False) -> None:
        self._standard = [Webhook(s) for s in secrets if s.startswith("whsec_")]
        self._legacy = legacy
        # Unsettled whether the legacy key is the whole secret string or the decoded bytes
        # (docs/linq-contract.md §7.4, §10), so both are tried.
        self._legacy_keys: list[bytes] = []
        for secret in secrets:
            self._legacy_keys.append(secret.encode())
            if secret.startswith("whsec_"):
                body = secret.removeprefix("whsec_")
                self._legacy_keys.append(base64.b64decode(body + "=" * (-len(body) % 4)))
        if not self._standard and not (legacy and self._legacy_keys):
            raise ConfigError(
                "CARDSHARE_WEBHOOK_SECRETS",
                "has no whsec_ secret: set it to the signing_secret Linq returned for the subscription",
            )

    def verify(self, body: bytes, headers: Mapping[str, str], *, now: float) -> Verified:
        """Accept the delivery or raise Rejected. `headers` looks names up in lower case (Starlette's
        are case-insensitive); `now` (Unix seconds) serves the legacy scheme, the library reads
        its own clock."""
        standard = [headers.get(h) for h in ("webhook-id", "webhook-timestamp", "webhook-signature")]
        legacy_sent = headers.get("x-webhook-signature") is not None
        if not any(standard):
            if legacy_sent and not self._legacy:
                raise Rejected(
                    "only the legacy X-Webhook-Signature was sent, "
                    "and CARDSHARE_WEBHOOK_LEGACY_SIGNATURES is off"
                )
            if legacy_sent:
                return self._verify_legacy(body, headers, now)
            raise Rejected("no signature headers (webhook-id, webhook-timestamp, webhook-signature)")
        try:
            return self._verify_standard(body, headers)
        except Rejected:
            if self._legacy and legacy_sent:
                try:
                    return self._verify_legacy(body, headers, now)
                except Rejected:
                    pass
            raise

    def _verify_standard(self, body: bytes, headers: Mapping[str, str]) -> Verified:
        webhook_id = headers.get("webhook-id", "")
        timestamp = headers.get("webhook-timestamp", "")
        given = {
            "webhook-id": webhook_id,
            "webhook-timestamp": timestamp,
            "webhook-signature": headers.get("webhook-signature", ""),
        }
        reason = "no whsec_ secret is configured for Standard Webhooks signatures"
        for hook in self._standard:
            try:
                hook.verify(body, given, json_parse=False)
            except WebhookVerificationError as exc:
                reason = _LIBRARY_REASONS.get(str(exc), f"signature rejected: {exc}")
                if str(exc) in _TIMESTAMP_REASONS or str(exc) == "Missing required headers":
                    break  # the same for every secret
                continue
            except UnicodeDecodeError:
                raise Rejected("body is not UTF-8, so its signature cannot be checked") from None
            except ValueError:  # an entry without "v1," or with bad base64
                raise Rejected("webhook-signature is malformed (expected 'v1,<base64>' entries)") from None
            # Keyed on the time the signature covers (the library signs floor(float(header))), so
            # the same request with its timestamp spelled differently ("1.7e9", " 0017...") is
            # still the same delivery, and so a replay.
            return Verified(webhook_id, f"{webhook_id}.{canonical_timestamp(timestamp)}", "standard")
        raise Rejected(reason)

    def _verify_legacy(self, body: bytes, headers: Mapping[str, str], now: float) -> Verified:
        raw_ts = headers.get("x-webhook-timestamp", "")
        given = headers.get("x-webhook-signature", "").strip().lower()
        try:
            timestamp = int(raw_ts)
        except ValueError:
            raise Rejected("X-Webhook-Timestamp is missing or not a Unix time") from None
        if timestamp < now - TOLERANCE_S:
            raise Rejected("X-Webhook-Timestamp is more than 5 minutes old (stale or replayed)")
        if timestamp > now + TOLERANCE_S:
            raise Rejected("X-Webhook-Timestamp is more than 5 minutes in the future")
        for key in self._legacy_keys:
            if hmac.compare_digest(legacy_signature(key, timestamp, body), given):
                return Verified(headers.get("webhook-id") or None, f"legacy.{timestamp}", "legacy")
        raise Rejected("X-Webhook-Signature matches none of the configured secrets")


def canonical_timestamp(raw: str) -> int:
    """The Unix second a Standard Webhooks timestamp header means (the library's own parse)."""
    return math.floor(float(raw))


def legacy_signature(key: bytes, timestamp: int, body: bytes) -> str:
    """The legacy scheme (docs/linq-contract.md §7.4): lowercase hex HMAC-SHA256 of "timestamp.body"."""
    return hmac.new(key, f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()


def verifier_for(settings: Settings) -> Verifier:
    secrets = [s.get() for s in settings.webhook_secrets]
    for secret in secrets:
        register_secret(secret)
        register_secret(secret.removeprefix("whsec_"))
    return Verifier(secrets, legacy=settings.webhook_legacy_signatures)


def record(
    sessions: sessionmaker[Session],
    parsed: payloads.ParsedEvent,
    verified: Verified,
    first_outbound: FirstOutbound | None = None,
) -> tuple[Delivery, bool]:
    """One short transaction: the dedupe row, the chat's facts if the event is new and, with the
    event path, the chat-day the activity made due (`sharing.first_outbound`), published after
    COMMIT.

    An event that names no line takes the line of the chat cardshare knows; for a chat not
    known yet it is kept in `webhook_pending` (`ingest.pending`). Returns the delivery and
    whether the event was kept pending."""
    outcome, pending, queued = _record(sessions, parsed, verified, first_outbound)
    if first_outbound is not None:
        first_outbound.publish(queued)
    return outcome, pending


def _record(
    sessions: sessionmaker[Session],
    parsed: payloads.ParsedEvent,
    verified: Verified,
    first_outbound: FirstOutbound | None,
) -> tuple[Delivery, bool, ChatDays]:
    activity = parsed.activity
    assert activity is not None
    pending = False
    queued: ChatDays = []
    try:
        with transaction(sessions) as session:
            outcome = record_webhook_event(
                session,
                event_id=parsed.event_id,
                webhook_id=bounds.clean_text(verified.webhook_id, 128),
                event_type=parsed.event_type,
                chat_id=activity.chat_id,
                delivery=verified.delivery,
            )
            if outcome is Delivery.NEW:
                if parsed.line_unknown:
                    line = line_of_chat(session, activity.chat_id)
                    if line is None:
                        pending = True
                        add_pending(
                            session,
                            event_id=parsed.event_id,
                            event_type=parsed.event_type,
                            chat_id=activity.chat_id,
                            activity_json=pending_store.to_json(activity),
                        )
                    else:
                        activity = dataclasses.replace(activity, line_phone=line)
                if not pending:
                    record_activity(session, [activity])
                    if first_outbound is not None:
                        queued = first_outbound.mark(session, [activity])
            return outcome, pending, queued
    except sa_exc.TimeoutError as exc:  # every pooled connection busy: same answer as an outage
        raise StoreUnavailable("database connection pool exhausted") from exc


class BodyTooLarge(Exception):
    pass


async def read_body(request: Request, limit: int) -> bytes:
    """The body, counted while it streams in: past `limit` bytes the read stops (nothing more is
    buffered, whatever Content-Length said or whether the upload is chunked)."""
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise BodyTooLarge(f"body exceeds {limit} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


def _too_large(reason: str) -> Response:
    event(log, "webhook.rejected", logging.WARNING, reason=reason)
    metrics.webhook_delivery("too_large")
    # Connection: close, so the rest of an oversized upload is not read (uvicorn closes).
    return JSONResponse({"error": "body too large"}, 413, headers={"Connection": "close"})


def _malformed(reason: str, webhook_id: str | None) -> Response:
    event(log, "webhook.malformed", logging.WARNING, reason=reason, webhook_id=webhook_id)
    metrics.webhook_delivery("malformed")
    return JSONResponse({"error": f"malformed payload: {reason}"}, 400)


def record_line_event(
    sessions: sessionmaker[Session],
    parsed: line_events.LineEvent,
    verified: Verified,
    *,
    default_zone: ZoneInfo,
    now: dt.datetime,
) -> Delivery:
    """One short transaction: the dedupe row and, if the event is new, what it says of a line or
    the account. A line Linq clears (no longer CRITICAL or FLAGGED) has its held chat-days
    re-armed for the next release pass (docs/decisions.md §10)."""
    try:
        with transaction(sessions) as session:
            outcome = record_webhook_event(
                session,
                event_id=parsed.event_id,
                webhook_id=(verified.webhook_id or "")[:128] or None,
                event_type=parsed.event_type,
                chat_id=None,
                delivery=verified.delivery,
            )
            if outcome is not Delivery.NEW:
                return outcome
            if parsed.line_status is not None:
                _apply_line_status(session, parsed.line_status, default_zone, now)
            warning = parsed.warning
            if warning is not None and warning.resolves:
                resolve_warnings(session, subject=warning.subject, resolution=f"resolved by {warning.kind}")
            elif warning is not None:
                raise_warning(
                    session,
                    kind=warning.kind,
                    subject=warning.subject,
                    summary=warning.summary,
                    occurred_at=warning.occurred_at,
                    event_id=parsed.event_id,
                )
            return outcome
    except sa_exc.TimeoutError as exc:
        raise StoreUnavailable("database connection pool exhausted") from exc


def _apply_line_status(
    session: Session, update: line_events.LineStatusUpdate, zone: ZoneInfo, now: dt.datetime
) -> None:
    before = lines(session, zone, [update.phone])
    was_held = bool(before) and _linq_holds(before[0].state)
    record_reputation(session, update.phone, update.reputation, at=update.changed_at)
    record_status(session, update.phone, update.status, at=update.changed_at)
    after = lines(session, zone, [update.phone])
    if after and was_held and not _linq_holds(after[0].state):
        rearm_held(session, days=[after[0].state.today(now)], lines=[update.phone])


def _linq_holds(line: LineState) -> bool:
    return line.reputation == "CRITICAL" or line.linq_status == "FLAGGED"


def create_app(
    settings: Settings,
    sessions: sessionmaker[Session],
    *,
    clock: Callable[[], float] = time.time,
    refresh_card: Callable[[str], object] | None = None,
    first_outbound: FirstOutbound | None = None,
) -> Starlette:
    """The receiver's ASGI app: POST /webhooks/linq, GET /healthz (liveness: touches nothing),
    GET /readyz (readiness: PostgreSQL answers, so a delivery would be recorded), GET /metrics.

    `refresh_card(line)` hands a `contact_card.*` event's line to a worker (a control-queue
    task): reading the card from Linq does not belong inside the request. `first_outbound`:
    the event path (outbound activity that makes a chat due queues its share; None: off).
    """
    verifier = verifier_for(settings)
    body_timeout_s = settings.webhook_body_timeout_s

    async def receive(request: Request) -> Response:
        started = time.monotonic()
        declared = request.headers.get("content-length", "")
        if declared.isdigit() and int(declared) > MAX_BODY_BYTES:
            return _too_large(f"declared body of {declared[:20]} bytes is too large")
        try:
            async with asyncio.timeout(body_timeout_s):
                body = await read_body(request, MAX_BODY_BYTES)
        except BodyTooLarge as exc:
            return _too_large(str(exc))
        except TimeoutError:
            event(
                log, "webhook.rejected", logging.WARNING, reason=f"body not received within {body_timeout_s}s"
            )
            metrics.webhook_delivery("timeout")
            return JSONResponse({"error": "body read timeout"}, 408, headers={"Connection": "close"})
        webhook_id = bounds.clean_text(request.headers.get("webhook-id", ""), 128)
        try:
            verified = verifier.verify(body, request.headers, now=clock())
        except Rejected as exc:
            event(log, "webhook.rejected", logging.WARNING, reason=exc.reason, webhook_id=webhook_id)
            metrics.webhook_delivery("rejected")
            return JSONResponse({"error": "signature rejected"}, 401)
        received = dt.datetime.fromtimestamp(clock(), dt.UTC)
        try:
            parsed = payloads.parse_event(body, webhook_id=verified.webhook_id, now=received)
        except payloads.MalformedPayload as exc:
            return _malformed(str(exc), webhook_id)
        except Exception as exc:  # a signed body our parser did not expect: 400, never 500
            log.error("webhook.unparsable", exc_info=exc, extra={"event": "webhook.unparsable"})
            return _malformed(f"unusable payload ({type(exc).__name__})", webhook_id)
        if parsed.notes:
            event(log, "webhook.clamped", logging.WARNING, event_id=parsed.event_id, notes=list(parsed.notes))
        if parsed.activity is None and parsed.event_type in line_events.HANDLED:
            return await _line_event(body, parsed, verified, webhook_id, started)
        if parsed.activity is None:
            event(
                log, "webhook.ignored", logging.DEBUG, event_id=parsed.event_id, event_type=parsed.event_type
            )
            metrics.webhook_delivery("ignored")
            return JSONResponse({"status": "ignored"})
        try:
            outcome, kept = await run_in_threadpool(record, sessions, parsed, verified, first_outbound)
        except StoreUnavailable as exc:
            event(log, "webhook.db_unavailable", logging.ERROR, event_id=parsed.event_id, error=str(exc))
            metrics.webhook_delivery("db_unavailable")
            return JSONResponse({"error": "database unavailable; retry later"}, 503)
        except sa_exc.DataError as exc:  # a value PostgreSQL refused: the body is unusable as sent
            return _malformed(f"unusable value ({type(exc.orig or exc).__name__})", webhook_id)
        if outcome is Delivery.REPLAYED:
            event(
                log,
                "webhook.rejected",
                logging.WARNING,
                reason="replayed: this exact signed delivery was already accepted",
                event_id=parsed.event_id,
                webhook_id=webhook_id,
            )
            metrics.webhook_delivery("replayed")
            return JSONResponse({"error": "signature rejected"}, 401)
        result = "pending" if kept else ("recorded" if outcome is Delivery.NEW else "duplicate")
        event(
            log,
            "webhook.duplicate" if outcome is Delivery.DUPLICATE else f"webhook.{result}",
            event_id=parsed.event_id,
            event_type=parsed.event_type,
            version=parsed.version,
            chat_id=parsed.activity.chat_id,
            scheme=verified.scheme,
            ms=round((time.monotonic() - started) * 1000, 1),
        )
        metrics.webhook_delivery(result)
        return JSONResponse({"status": result})

    async def _line_event(
        body: bytes,
        parsed: payloads.ParsedEvent,
        verified: Verified,
        webhook_id: str | None,
        started: float,
    ) -> Response:
        """Events about a line or the account (line_events): recorded in one transaction; a
        card change is handed to a worker first, so a broker outage gets Linq's retry."""
        try:
            line_event = line_events.parse(body, event_id=parsed.event_id)
        except payloads.MalformedPayload as exc:
            return _malformed(str(exc), webhook_id)
        except Exception as exc:  # a signed body our parser did not expect: 400, never 500
            log.error("webhook.unparsable", exc_info=exc, extra={"event": "webhook.unparsable"})
            return _malformed(f"unusable payload ({type(exc).__name__})", webhook_id)
        if line_event.card is not None:
            if refresh_card is None:
                event(log, "webhook.card_refresh_skipped", logging.WARNING, line=line_event.card.phone)
            else:
                try:
                    await run_in_threadpool(refresh_card, line_event.card.phone)
                except Exception as exc:  # the broker: kombu/redis raise their own types
                    event(log, "webhook.broker_unavailable", logging.ERROR, error=type(exc).__name__)
                    metrics.webhook_delivery("broker_unavailable")
                    return JSONResponse({"error": "broker unavailable; retry later"}, 503)
        try:
            outcome = await run_in_threadpool(
                record_line_event,
                sessions,
                line_event,
                verified,
                default_zone=settings.zone,
                now=dt.datetime.now(dt.UTC),
            )
        except StoreUnavailable as exc:
            event(log, "webhook.db_unavailable", logging.ERROR, event_id=parsed.event_id, error=str(exc))
            metrics.webhook_delivery("db_unavailable")
            return JSONResponse({"error": "database unavailable; retry later"}, 503)
        if outcome is Delivery.REPLAYED:
            event(log, "webhook.rejected", logging.WARNING, reason="replayed", event_id=parsed.event_id)
            metrics.webhook_delivery("replayed")
            return JSONResponse({"error": "signature rejected"}, 401)
        if outcome is Delivery.NEW:
            _log_line_event(line_event)
        result = "recorded" if outcome is Delivery.NEW else "duplicate"
        event(
            log,
            f"webhook.{result}",
            event_id=parsed.event_id,
            event_type=parsed.event_type,
            ms=round((time.monotonic() - started) * 1000, 1),
        )
        metrics.webhook_delivery(result)
        return JSONResponse({"status": result})

    async def health(request: Request) -> Response:
        return JSONResponse({"ok": True})

    async def ready(request: Request) -> Response:
        try:
            await asyncio.wait_for(run_in_threadpool(ping, sessions), READY_TIMEOUT_S)
        except (StoreUnavailable, sa_exc.SQLAlchemyError, TimeoutError) as exc:
            reason = "timed out" if isinstance(exc, TimeoutError) else str(exc).splitlines()[0][:200]
            return JSONResponse({"ok": False, "error": f"PostgreSQL does not answer: {reason}"}, 503)
        return JSONResponse({"ok": True})

    async def metrics_page(request: Request) -> Response:
        body, content_type = metrics.exposition()
        return Response(body, media_type=content_type)

    return Starlette(
        routes=[
            Route(PATH, receive, methods=["POST"]),
            Route("/healthz", health, methods=["GET"]),
            Route("/readyz", ready, methods=["GET"]),
            Route("/metrics", metrics_page, methods=["GET"]),
        ]
    )


def _log_line_event(parsed: line_events.LineEvent) -> None:
    if parsed.line_status is not None:
        u = parsed.line_status
        bad = u.reputation == "CRITICAL" or u.status == "FLAGGED"
        event(
            log,
            "line.status_updated",
            logging.WARNING if bad else logging.INFO,
            line=u.phone,
            reputation=u.reputation,
            status=u.status,
            previous_reputation=u.previous_reputation,
            previous_status=u.previous_status,
        )
        metrics.line_status_update(u.reputation, u.status)
    w = parsed.warning
    if w is not None and not w.resolves:
        # An operator must act: one error line, a metric, and the warning on `status`.
        event(log, "account.warning", logging.ERROR, kind=w.kind, subject=w.subject, summary=w.summary)
        metrics.account_warning(w.kind)
    elif w is not None:
        event(log, "account.warning_resolved", kind=w.kind, subject=w.subject)


def url_of(sock: socket.socket) -> str:
    """Where Linq should post, for a socket bound by `http_server.bind`."""
    return address(sock) + PATH
