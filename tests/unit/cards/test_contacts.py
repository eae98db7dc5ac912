"""v2 List Contacts: URL, both v2 error envelopes, page parsing, and what goes on the wire (respx)."""

from __future__ import annotations

import json

import httpx
import pytest
import respx

from worker.cards.contacts import ContactsClient, ContactsError, contacts_url, parse_page, parse_v2_error

# linq-fixtures/error_v2.json (the v2 "standard error" format)
STANDARD = {
    "status": "error",
    "error_code": "INTERNAL_ERROR",
    "message": "Contacts could not be loaded",
    "errors": ["Temporary server problem; try the request again later."],
}
RENDER = {"errors": [{"status": 404, "code": "not_found", "title": "Not Found", "detail": "Chat not found"}]}
TRACE = "5b8aa5a2d2c872e8321cf37308d69df2"


@pytest.mark.parametrize(
    ("base", "url"),
    [
        ("https://api.linqapp.com/api/partner", "https://api.linqapp.com/api/partner/v2/contacts"),
        ("https://api.linqapp.com/api/partner/", "https://api.linqapp.com/api/partner/v2/contacts"),
        ("http://127.0.0.1:8765/api/partner", "http://127.0.0.1:8765/api/partner/v2/contacts"),
        ("https://proxy.example/linq/api/partner/v3", "https://proxy.example/linq/api/partner/v2/contacts"),
        ("https://proxy.example/linq", "https://proxy.example/linq/v2/contacts"),
    ],
)
def test_contacts_url_is_v2_on_the_v3_host(base: str, url: str) -> None:
    assert contacts_url(base) == url


def test_standard_error_keeps_the_string_code_and_details() -> None:
    e = parse_v2_error(500, json.dumps(STANDARD).encode(), {"x-trace-id": TRACE})
    assert (e.status, e.code, e.trace_id) == (500, "INTERNAL_ERROR", TRACE)
    assert (
        e.message == "Contacts could not be loaded (Temporary server problem; try the request again later.)"
    )
    line = e.one_line()
    assert "\n" not in line
    assert line.startswith(
        "contacts: Linq error: HTTP 500, code INTERNAL_ERROR, Contacts could not be loaded"
    )
    assert line.endswith(f"trace {TRACE}")


def test_render_error_format_takes_the_first_error() -> None:
    e = parse_v2_error(404, json.dumps(RENDER).encode(), {})
    assert (e.status, e.code, e.message, e.trace_id) == (404, "not_found", "Chat not found", None)
    assert e.one_line() == "contacts: Linq error: HTTP 404, code not_found, Chat not found"


def test_a_body_that_is_not_json_still_gives_one_line() -> None:
    e = parse_v2_error(502, b"<html>\n<b>Bad gateway</b>\n</html>", {"x-trace-id": TRACE})
    assert e.code is None
    assert "\n" not in e.one_line()
    assert "HTTP 502, code -, <html> <b>Bad gateway</b> </html>" in e.one_line()
    empty = parse_v2_error(503, b"", {})
    assert empty.message == "Service Unavailable"


@pytest.mark.parametrize("status", [401, 403])
def test_auth_errors_name_the_setting(status: int) -> None:
    body = {"status": "error", "error_code": "UNAUTHORIZED", "message": "Invalid token", "errors": []}
    line = parse_v2_error(status, json.dumps(body).encode(), {}).one_line()
    assert "check LINQ_API_V3_API_KEY" in line
    assert f"HTTP {status}, code UNAUTHORIZED, Invalid token" in line


def test_parse_page_refuses_shapes_it_cannot_read() -> None:
    ok = parse_page(
        {
            "contacts": [{"id": 1}],
            "pagination": {"current_page": 2, "per_page": 1, "total_pages": 2, "total_count": 2},
        }
    )
    assert ok.last
    assert ok.contacts == [{"id": 1}]
    bads: list[object] = [{}, {"contacts": []}, {"contacts": [], "pagination": {"current_page": "x"}}, []]
    for bad in bads:
        with pytest.raises(ContactsError, match="unexpected response"):
            parse_page(bad)


def page(n: int, total_pages: int, per_page: int = 2) -> dict[str, object]:
    return {
        "contacts": [{"id": n * 10 + i} for i in range(per_page)],
        "pagination": {
            "current_page": n,
            "per_page": per_page,
            "total_pages": total_pages,
            "total_count": per_page * total_pages,
        },
    }


BASE = "https://linq.test/api/partner"


@respx.mock
def test_client_sends_the_integration_token_and_page_params() -> None:
    route = respx.get(f"{BASE}/v2/contacts").mock(return_value=httpx.Response(200, json=page(1, 1)))
    client = ContactsClient(contacts_url(BASE), "tok-123", httpx.Client())
    try:
        got = client.page(1, 2)
    finally:
        client.close()
    assert [c["id"] for c in got.contacts] == [10, 11]
    request = route.calls.last.request
    assert request.headers["X-LINQ-INTEGRATION-TOKEN"] == "tok-123"
    assert "authorization" not in request.headers
    assert dict(request.url.params) == {"page": "1", "per_page": "2"}


@respx.mock
def test_pages_follow_page_numbers_until_the_last() -> None:
    route = respx.get(f"{BASE}/v2/contacts")
    route.side_effect = lambda request: httpx.Response(200, json=page(int(request.url.params["page"]), 3))
    client = ContactsClient(contacts_url(BASE), "tok", httpx.Client())
    try:
        pages = list(client.pages(2))
    finally:
        client.close()
    assert [p.current_page for p in pages] == [1, 2, 3]
    assert route.call_count == 3


@respx.mock
def test_transport_failure_is_one_line_without_status() -> None:
    respx.get(f"{BASE}/v2/contacts").mock(side_effect=httpx.ConnectError("refused"))
    client = ContactsClient(contacts_url(BASE), "tok", httpx.Client())
    with pytest.raises(ContactsError, match=r"could not be reached \(ConnectError\)"):
        client.page()
    client.close()
