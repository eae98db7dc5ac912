"""The Starlette app: Linq Partner API routes under /api/partner, the admin API under /_sim.

Every Linq request goes through one wrapper (`_Linq._endpoint`) that counts it, stamps a trace
id, checks auth, applies fault rules and renders errors. Handlers stay O(1) and never log, so
the server keeps up with hundreds of requests a second on a small box.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import secrets
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from http import HTTPStatus
from typing import Any

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Mount, Route

from worker.simulator.admin import admin_routes
from worker.simulator.faults import FaultRule
from worker.simulator.state import ShareEvent, SimError, SimState, check_e164, share_error
from worker.simulator.webhooks import schedule_emits

API_PREFIX = "/api/partner"
V2_ERROR_CODES = {
    400: "INVALID_PARAMETER",
    401: "UNAUTHORIZED",
    403: "FORBIDDEN",
    404: "NOT_FOUND",
    429: "RATE_LIMITED",
}


@dataclass
class Call:
    """One Linq request on its way through the wrapper."""

    request: Request
    trace_id: str
    share_event: ShareEvent | None = None


Handler = Callable[[Call], Awaitable[Response]]


def create_app(state: SimState, api_key: str, *, shutdown: asyncio.Event | None = None) -> Starlette:
    """Build the simulator app. Setting `shutdown` ends any `accept_then_hang` waits at once."""
    linq = _Linq(state, api_key, shutdown or asyncio.Event())
    routes = [Mount(API_PREFIX, routes=linq.routes()), Mount("/_sim", routes=admin_routes(state))]
    return Starlette(routes=routes, exception_handlers={HTTPException: _http_error})


def new_trace_id() -> str:
    return secrets.token_hex(16)


def doc_url(code: int) -> str:
    return f"https://docs.linqapp.com/error/codes/{code // 1000}xxx/{code}/"


def error_response(err: SimError, trace_id: str, *, v2: bool = False) -> Response:
    """Render an API error in the v3 envelope (or the v2 standard-error format)."""
    headers = {"X-Trace-ID": trace_id}
    if err.retry_after is not None:
        headers["Retry-After"] = str(err.retry_after)
    if v2:
        code = V2_ERROR_CODES.get(err.status, "INTERNAL_ERROR")
        body: dict[str, Any] = {
            "status": "error",
            "error_code": code,
            "message": err.message,
            "errors": [err.message],
        }
        return JSONResponse(body, err.status, headers=headers)
    error: dict[str, Any] = {"status": err.status, "code": err.code, "message": err.message}
    if err.code is not None:
        error["doc_url"] = doc_url(err.code)
    if err.retry_after is not None:
        error["retry_after"] = err.retry_after
    return JSONResponse({"success": False, "error": error, "trace_id": trace_id}, err.status, headers=headers)


async def _http_error(request: Request, exc: Exception) -> Response:
    # Unknown paths and wrong methods still answer in Linq's shape, with a trace id.
    status = exc.status_code if isinstance(exc, HTTPException) else 500
    return error_response(SimError(status, None, HTTPStatus(status).phrase), new_trace_id())


def fault_response(rule: FaultRule, trace_id: str, *, v2: bool) -> Response:
    """The canned answer of a `respond` rule: raw text, an empty 2xx, or an error envelope."""
    headers = {"X-Trace-ID": trace_id}
    if rule.retry_after is not None:
        headers["Retry-After"] = str(rule.retry_after)
    if rule.body_raw is not None:
        return Response(rule.body_raw, rule.status, headers=headers, media_type=rule.content_type)
    if rule.status < 400:
        return Response(status_code=rule.status, headers=headers)
    message = rule.message or HTTPStatus(rule.status).phrase
    return error_response(SimError(rule.status, rule.code, message, rule.retry_after), trace_id, v2=v2)


def _with_headers(response: Response, rule: FaultRule) -> Response:
    """A rule's `headers` replace the answer's own (an over-long X-Trace-ID, a Retry-After of
    'inf'): what a sloppy upstream could send on any answer, accepted shares included."""
    for name, value in (rule.headers or {}).items():
        response.headers[name] = value
    return response


class _Linq:
    def __init__(self, state: SimState, api_key: str, shutdown: asyncio.Event) -> None:
        self.state = state
        self._bearer = f"Bearer {api_key}".encode()
        self._token = api_key.encode()
        self._shutdown = shutdown

    def routes(self) -> list[Route]:
        return [
            self._route("GET", "/v3/phone_numbers", self.phone_numbers),
            self._route("GET", "/v3/contact_card", self.get_cards),
            self._route("POST", "/v3/contact_card", self.create_card),
            self._route("PATCH", "/v3/contact_card", self.update_card),
            self._route("GET", "/v3/chats", self.list_chats),
            self._route("GET", "/v3/chats/{chat_id}", self.get_chat),
            self._route("GET", "/v3/chats/{chat_id}/messages", self.list_messages),
            self._route("POST", "/v3/chats/{chat_id}/share_contact_card", self.share, share=True),
            self._route("GET", "/v2/contacts", self.contacts, v2=True),
        ]

    def _route(
        self, method: str, template: str, handler: Handler, *, v2: bool = False, share: bool = False
    ) -> Route:
        key = f"{method} {template}"

        async def endpoint(request: Request) -> Response:
            return await self._endpoint(request, key, handler, v2=v2, share=share)

        return Route(template, endpoint, methods=[method])

    async def _endpoint(
        self, request: Request, key: str, handler: Handler, *, v2: bool, share: bool
    ) -> Response:
        call = Call(request, new_trace_id())
        self.state.count_request(key)
        # Auth before faults: a 401 stays a 401, and bad-token requests spend no rule's `times`.
        if not self._authorized(request, v2=v2):
            return error_response(SimError(401, 2004, "Invalid or missing API token"), call.trace_id, v2=v2)
        if share:
            self.state.inflight[call.trace_id] = {
                "chat_id": request.path_params.get("chat_id"),
                "phase": "before_accept",
                "since": self.state.clock(),
            }
        try:
            response = await self._dispatch(call, handler, v2=v2, share=share)
        finally:
            self.state.inflight.pop(call.trace_id, None)
            schedule_emits(self.state)  # a card write or a re-scored line says so by webhook
        if call.share_event is not None:
            # "Responded" = handed to the server while the client was still there to read it.
            call.share_event.responded = not await request.is_disconnected()
        return response

    def _authorized(self, request: Request, *, v2: bool) -> bool:
        if v2:
            got = request.headers.get("x-linq-integration-token", "").encode()
            return hmac.compare_digest(got, self._token)
        return hmac.compare_digest(request.headers.get("authorization", "").encode(), self._bearer)

    async def _dispatch(self, call: Call, handler: Handler, *, v2: bool, share: bool) -> Response:
        request = call.request
        chat_id: str | None = request.path_params.get("chat_id")
        path = request.scope["path"].split(API_PREFIX, 1)[-1]
        rule = self.state.faults.pick(request.method, path, chat_id)
        if rule is not None and rule.latency_ms > 0:
            await asyncio.sleep(rule.latency_ms / 1000)
        if rule is not None and rule.mode == "respond":
            if share and chat_id is not None:
                call.share_event = self.state.record_share_fault(
                    chat_id, rule.status, rule.retry_after, call.trace_id
                )
            return _with_headers(fault_response(rule, call.trace_id, v2=v2), rule)
        try:
            response = await handler(call)
        except SimError as err:
            response = error_response(err, call.trace_id, v2=v2)
        if rule is not None:
            response = _with_headers(response, rule)
        if rule is not None and rule.mode == "accept_then_hang":
            if call.trace_id in self.state.inflight and call.share_event is not None:
                accepted = call.share_event.outcome == "accepted"
                self.state.inflight[call.trace_id]["phase"] = "after_accept" if accepted else "refused"
            await self._hang(request, rule.hang_s)
        return response

    async def _hang(self, request: Request, seconds: float) -> None:
        # The work is done; only the answer is held back. It ends early when the client goes
        # away or the server stops, so a hang never outlives either.
        waits = {
            asyncio.ensure_future(self._shutdown.wait()),
            asyncio.ensure_future(_until_disconnect(request)),
        }
        try:
            await asyncio.wait(waits, timeout=seconds, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in waits:
                task.cancel()

    # ---- handlers --------------------------------------------------------------------------
    def _json(self, call: Call, content: Any, status: int = 200) -> Response:
        return JSONResponse(content, status, headers={"X-Trace-ID": call.trace_id})

    async def phone_numbers(self, call: Call) -> Response:
        return self._json(call, {"phone_numbers": self.state.list_lines()})

    async def get_cards(self, call: Call) -> Response:
        phone = call.request.query_params.get("phone_number")
        return self._json(call, {"contact_cards": self.state.list_cards(phone)})

    async def create_card(self, call: Call) -> Response:
        body = await _json_object(call.request)
        first_name = body.get("first_name")
        if not isinstance(first_name, str) or not first_name.strip():
            raise SimError(400, 1001, "first_name is required")
        if body.get("phone_number") is None:
            raise SimError(400, 1001, "phone_number is required")
        phone = check_e164(body["phone_number"])
        last_name, image_url = _optional_str(body, "last_name"), _optional_str(body, "image_url")
        return self._json(call, self.state.create_card(phone, first_name, last_name, image_url))

    async def update_card(self, call: Call) -> Response:
        phone = call.request.query_params.get("phone_number")
        if phone is None:
            raise SimError(400, 1001, "phone_number query parameter is required")
        check_e164(phone)
        body = await _json_object(call.request)
        changes: dict[str, str | None] = {}
        if "first_name" in body:
            first_name = body["first_name"]
            if not isinstance(first_name, str) or not first_name.strip():
                raise SimError(400, 1005, "first_name must be a non-empty string")
            changes["first_name"] = first_name
        for key in ("last_name", "image_url"):
            if key in body:
                changes[key] = _optional_str(body, key)
        return self._json(call, self.state.update_card(phone, changes))

    async def list_chats(self, call: Call) -> Response:
        query = call.request.query_params
        limit = _int_param(query.get("limit"), "limit", default=20, low=1, high=100)
        cursor = _int_param(query.get("cursor"), "cursor", default=0, low=0)
        from_ = query.get("from")
        if from_ is not None:
            check_e164(from_)
        chats, next_cursor = self.state.list_chats(from_, query.get("to"), limit, cursor)
        return self._json(call, {"chats": chats, "next_cursor": next_cursor})

    async def get_chat(self, call: Call) -> Response:
        chat = self.state.get_chat(call.request.path_params["chat_id"])
        return self._json(call, self.state.chat_json(chat))

    async def list_messages(self, call: Call) -> Response:
        query = call.request.query_params
        # Linq's documented default page size for messages is 50 (chats: 20).
        limit = _int_param(query.get("limit"), "limit", default=50, low=1, high=100)
        cursor = _int_param(query.get("cursor"), "cursor", default=0, low=0)
        messages, next_cursor = self.state.list_messages(call.request.path_params["chat_id"], limit, cursor)
        return self._json(call, {"messages": messages, "next_cursor": next_cursor})

    async def share(self, call: Call) -> Response:
        call.share_event = self.state.share(call.request.path_params["chat_id"], call.trace_id)
        error = share_error(call.share_event)
        if error is not None:
            raise error
        return Response(status_code=204, headers={"X-Trace-ID": call.trace_id})

    async def contacts(self, call: Call) -> Response:
        query = call.request.query_params
        page = _int_param(query.get("page"), "page", default=1, low=1)
        per_page = _int_param(query.get("per_page"), "per_page", default=25, low=1, high=100)
        return self._json(call, self.state.list_contacts(page, per_page))


async def _until_disconnect(request: Request) -> None:
    while (await request.receive())["type"] != "http.disconnect":
        pass


async def _json_object(request: Request) -> Mapping[str, Any]:
    raw = await request.body()
    if not raw.strip():
        return {}
    try:
        body = json.loads(raw)
    except ValueError as exc:
        raise SimError(400, 1003, "Request body is not valid JSON") from exc
    if not isinstance(body, dict):
        raise SimError(400, 1003, "Request body must be a JSON object")
    return body


def _optional_str(body: Mapping[str, Any], key: str) -> str | None:
    value = body.get(key)
    if value is not None and not isinstance(value, str):
        raise SimError(400, 1005, f"{key} must be a string")
    return value


def _int_param(raw: str | None, name: str, *, default: int, low: int, high: int | None = None) -> int:
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError as exc:
        raise SimError(400, 1005, f"{name} must be an integer") from exc
    if value < low or (high is not None and value > high):
        bounds = f"{low}..{high}" if high is not None else f">= {low}"
        raise SimError(400, 1005, f"{name} must be within {bounds}")
    return value
