"""The share POST bypasses the SDK's request building: on the wire it must be the SDK's request,
and every answer must come back from `LinqGateway` exactly as the SDK path would give it.

Both paths run on one httpx client whose transport records the request and plays a scripted
answer (no network); the SDK path is `LinqGateway._share_via_sdk`, the SDK call cardshare made
before. An SDK upgrade that changes its request fails here, not in production.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable

import httpx
import linq
import pytest

from worker.linq import LinqCallError, LinqGateway, LinqResponse, _Client

BASE = "http://linq.test/api/partner"
Answer = Callable[[httpx.Request], httpx.Response]


def gateway(answer: Answer, seen: list[httpx.Request]) -> LinqGateway:
    def transport(request: httpx.Request) -> httpx.Response:
        request.read()
        seen.append(request)
        return answer(request)

    http = _Client(
        transport=httpx.MockTransport(transport),
        timeout=httpx.Timeout(connect=3.0, read=11.0, write=11.0, pool=3.0),
        follow_redirects=False,
    )
    sdk = linq.LinqAPIV3(api_key="sk-test-123", base_url=BASE, max_retries=0, http_client=http)
    return LinqGateway(sdk=sdk, http=http)


def both(answer: Answer, chat_id: str) -> tuple[tuple[object, httpx.Request], tuple[object, httpx.Request]]:
    """(result, request) of the fast path and of the SDK path; a result is a LinqResponse or the
    LinqCallError's fields."""
    out = []
    for fast in (True, False):
        seen: list[httpx.Request] = []
        gw = gateway(answer, seen)
        call = gw.share_contact_card if fast else gw._share_via_sdk
        result: object
        try:
            result = call(chat_id)
        except LinqCallError as exc:
            result = (exc.status, exc.code, exc.message, exc.trace_id, exc.retry_after_s, exc.transport)
        (request,) = seen
        out.append((result, request))
    return out[0], out[1]


def wire(request: httpx.Request) -> tuple[object, ...]:
    return (request.method, str(request.url), request.headers.raw, request.content, request.extensions)


CHAT = str(uuid.UUID("5b0c3e5e-8f0d-4c1b-9a55-3f1d2b7c9e01"))


def test_the_request_is_the_sdks_byte_for_byte() -> None:
    (fast, fast_req), (sdk, sdk_req) = both(lambda _: httpx.Response(204), CHAT)
    assert wire(fast_req) == wire(sdk_req)
    # What matters, spelled out, so a change in the comparison itself cannot hide it.
    assert fast_req.method == "POST"
    assert str(fast_req.url) == f"{BASE}/v3/chats/{CHAT}/share_contact_card"
    assert fast_req.headers["authorization"] == "Bearer sk-test-123"
    assert fast_req.headers["user-agent"].startswith("LinqAPIV3/Python")
    assert fast_req.content == b""
    assert fast == sdk == LinqResponse(status=204, trace_id=None)


def test_every_request_is_the_same_after_the_first() -> None:
    seen: list[httpx.Request] = []
    gw = gateway(lambda _: httpx.Response(204), seen)
    other = str(uuid.uuid4())
    gw.share_contact_card(CHAT)
    gw.share_contact_card(other)
    gw._share_via_sdk(other)
    assert wire(seen[1]) == wire(seen[2])


ANSWERS: dict[str, Answer] = {
    "204 with trace": lambda _: httpx.Response(204, headers={"X-Trace-ID": "tr-1"}),
    "200 with a body": lambda _: httpx.Response(200, json={"ok": True}),
    "404 card not found": lambda _: httpx.Response(
        404,
        json={"error": {"status": 404, "code": 2012, "message": "Contact card not found"}, "trace_id": "t2"},
    ),
    "429 with Retry-After": lambda _: httpx.Response(
        429,
        headers={"Retry-After": "17"},
        json={"error": {"status": 429, "code": 1007, "message": "Too many"}, "trace_id": "t3"},
    ),
    "500 not JSON": lambda _: httpx.Response(500, text="<html>upstream down</html>"),
    "503 empty": lambda _: httpx.Response(503),
    "302 redirect": lambda _: httpx.Response(302, headers={"Location": "http://elsewhere/"}),
    "401 bad key": lambda _: httpx.Response(
        401, json={"error": {"status": 401, "code": 1001, "message": "Unauthorized"}}
    ),
}


@pytest.mark.parametrize("name", list(ANSWERS))
def test_every_answer_comes_back_as_the_sdk_path_gives_it(name: str) -> None:
    (fast, _), (sdk, _) = both(ANSWERS[name], CHAT)
    assert fast == sdk


def raising(exc: Exception) -> Answer:
    def answer(request: httpx.Request) -> httpx.Response:
        raise exc

    return answer


@pytest.mark.parametrize(
    "exc",
    [
        httpx.ConnectError("refused"),
        httpx.ConnectTimeout("slow connect"),
        httpx.PoolTimeout("pool"),
        httpx.ReadTimeout("no answer"),
        httpx.RemoteProtocolError("peer closed"),
        httpx.WriteError("broken pipe"),
    ],
    ids=type,
)
def test_transport_failures_are_judged_as_through_the_sdk(exc: Exception) -> None:
    (fast, _), (sdk, _) = both(raising(exc), CHAT)
    assert fast == sdk
    assert isinstance(fast, tuple)
    assert fast[5] is not None


def test_an_id_that_is_not_a_canonical_uuid_goes_through_the_sdk() -> None:
    # The SDK percent-encodes path parameters; the template only splices canonical UUIDs.
    (_fast, fast_req), (_sdk, sdk_req) = both(lambda _: httpx.Response(204), "a b/c")
    assert wire(fast_req) == wire(sdk_req)
    assert "a%20b%2Fc" in str(fast_req.url)
