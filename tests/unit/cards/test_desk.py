"""Pure parts of `cardshare card`: input validation, the write budget rule, error lines, verdicts."""

from __future__ import annotations

import datetime as dt

import pytest

from worker.cards.desk import (
    check_image_url,
    check_name,
    counts_against_budget,
    explain,
    failure_line,
    format_wait,
    line_views,
    normalize_phone,
    share_verdict,
)
from worker.cli.common import render_table
from worker.errors import InputError
from worker.linq import Card, LinqCallError
from worker.rules.classify import Transport
from worker.store.cards import CachedLine

PHONE = "+14155550123"
TRACE = "5b8aa5a2d2c872e8321cf37308d69df2"


@pytest.mark.parametrize(
    ("raw", "e164"),
    [
        ("+14155550123", "+14155550123"),
        ("  +14155550123 ", "+14155550123"),
        ("+1 (415) 555-0123", "+14155550123"),
        ("+44 7911 123456", "+447911123456"),
        ("+12223334444", "+12223334444"),  # possible though unassigned: metadata may lag new codes
    ],
)
def test_normalize_phone_gives_e164(raw: str, e164: str) -> None:
    assert normalize_phone(raw) == e164


@pytest.mark.parametrize(
    "raw",
    ["4155550123", "14155550123", "+1415555012", "+141555501234567", "+1-800-FLOWERS", "+", "", "+0 123456"],
)
def test_normalize_phone_refuses_what_is_not_e164(raw: str) -> None:
    with pytest.raises(InputError, match=r"is not E\.164") as info:
        normalize_phone(raw)
    assert info.value.exit_code == 2


@pytest.mark.parametrize(
    "url",
    [
        "https://cdn.example.com/acme.jpg",
        "https://cdn.example.com:8443/a/b.png?v=2",
        "https://8.8.8.8/logo.png",
        "HTTPS://cdn.example.com/x",
    ],
)
def test_good_image_urls_pass(url: str) -> None:
    assert check_image_url(f" {url} ") == url


@pytest.mark.parametrize(
    ("url", "why"),
    [
        ("http://cdn.example.com/a.jpg", "must be https"),
        ("ftp://cdn.example.com/a.jpg", "must be https"),
        ("cdn.example.com/a.jpg", "must be https"),
        ("https:///a.jpg", "has no host"),
        ("https://localhost/a.jpg", "public host"),
        ("https://intranet/a.jpg", "public host"),
        ("https://bad_host.example.com/a.jpg", "public host"),
        ("https://127.0.0.1/a.jpg", "private or local"),
        ("https://10.1.2.3/a.jpg", "private or local"),
        ("https://[::1]/a.jpg", "private or local"),
        ("https://user:pw@cdn.example.com/a.jpg", "user name or password"),
        ("https://cdn.example.com/a b.jpg", "spaces"),
        ("https://cdn.example.com:99999/a.jpg", "malformed"),
        ("https://cdn.example.com/" + "a" * 2100, "longer than 2048"),
        ("", "is empty"),
        # Issue 19: loopback, private, link-local and metadata hosts in every spelling.
        ("https://127.1/a.jpg", "private or local"),
        ("https://0177.0.0.1/a.jpg", "private or local"),
        ("https://0x7f.0.0.1/a.jpg", "private or local"),
        ("https://0x7f000001/a.jpg", "private or local"),
        ("https://2130706433/a.jpg", "private or local"),
        ("https://127.0.0.1./a.jpg", "private or local"),
        ("https://\uff11\uff12\uff17.0.0.1/a.jpg", "private or local"),
        ("https://[::ffff:127.0.0.1]/a.jpg", "private or local"),
        ("https://[::ffff:a9fe:a9fe]/a.jpg", "private or local"),
        ("https://[64:ff9b::7f00:1]/a.jpg", "private or local"),
        ("https://[fe80::1]/a.jpg", "private or local"),
        ("https://[fd00:ec2::254]/a.jpg", "private or local"),
        ("https://169.254.169.254/latest/meta-data/", "private or local"),
        ("https://100.100.100.200/a.jpg", "private or local"),
        ("https://0.0.0.0/a.jpg", "private or local"),
        ("https://224.0.0.1/a.jpg", "private or local"),
        ("https://metadata.google.internal/a.jpg", "metadata"),
        ("https://metadata/a.jpg", "public host"),
        ("https://cdn.localhost/a.jpg", "public host"),
        ("https://LOCALHOST./a.jpg", "public host"),
        ("https://printer.local/a.jpg", "public host"),
        ("https://router.home.arpa/a.jpg", "public host"),
        ("https://example.1/a.jpg", "public host"),
    ],
)
def test_bad_image_urls_are_refused(url: str, why: str) -> None:
    with pytest.raises(InputError, match=why):
        check_image_url(url)


def test_names_are_trimmed_and_checked() -> None:
    assert check_name("  Acme ", "--first") == "Acme"
    assert check_name("Café 🍰", "--first") == "Café 🍰"
    with pytest.raises(InputError, match="--first must not be empty"):
        check_name("   ", "--first")
    with pytest.raises(InputError, match="control characters"):
        check_name("Ac\nme", "--last")
    with pytest.raises(InputError, match="longer than"):
        check_name("x" * 300, "--first")
    assert check_name("Family \U0001f468\u200d\U0001f469\u200d\U0001f467", "--first")  # ZWJ emoji


@pytest.mark.parametrize(
    "name",
    [
        "Acme\x85Corp",  # C1 next line
        "Acme\x9b31m",  # C1 CSI
        "Acme\x1b[31m",  # ESC
        "Acme\u202eroc",  # right-to-left override
        "Acme\u2066x\u2069",  # isolates
        "Ac\u200bme",  # zero-width space
        "\ufeffAcme",  # BOM
        "Acme\u2028Corp",  # line separator
        "Acme\u00adCorp",  # soft hyphen (Cf)
    ],
)
def test_names_refuse_c1_controls_and_invisible_formatting(name: str) -> None:
    with pytest.raises(InputError, match=r"control characters|invisible formatting"):
        check_name(name, "--first")


@pytest.mark.parametrize(
    ("seconds", "shown"), [(0, "0s"), (0.2, "1s"), (59, "59s"), (60, "1m00s"), (412.1, "6m53s")]
)
def test_format_wait_rounds_up(seconds: float, shown: str) -> None:
    assert format_wait(seconds) == shown


@pytest.mark.parametrize(
    ("status", "transport", "counted"),
    [
        (200, None, True),
        (409, None, True),  # 2014: Linq ran its write rules before refusing
        (404, None, True),  # 2012 on PATCH
        (500, None, True),  # 2022: the docs say to call again "within the budget"
        (503, None, True),  # 4004
        (429, None, False),  # refused by the budget itself
        (401, None, False),
        (403, None, False),
        (400, None, False),
        (422, None, False),
        (None, Transport.NOT_SENT, False),
        (None, Transport.MAYBE_SENT, True),
        (None, None, True),  # in flight or crashed: Linq may have seen it
    ],
)
def test_which_writes_count_against_linqs_budget(
    status: int | None, transport: Transport | None, counted: bool
) -> None:
    assert counts_against_budget(status, transport) is counted


def err(status: int | None, code: int | None, message: str = "msg", **kw: object) -> LinqCallError:
    return LinqCallError(status=status, code=code, message=message, trace_id=TRACE, **kw)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("op", "error", "needle"),
    [
        ("create", err(409, 2014), "a card already exists for this number; use card update"),
        ("update", err(404, 2012), "there is no active card to update"),
        ("update", err(404, 2001), "there is no active card to update"),
        ("create", err(401, 2004), "check LINQ_API_V3_API_KEY"),
        ("update", err(403, 2005), "check LINQ_API_V3_API_KEY"),
        ("list", err(401, 2004), "check LINQ_API_V3_API_KEY"),
        ("create", err(429, 1007, retry_after_s=412.0), "retry after 6m52s (Retry-After)"),
        ("create", err(429, 1007), "wait 10 minutes"),
        ("create", err(503, 4004), "quick repeats extend that limit"),
        ("update", err(500, 2022), "run the same command again"),
        ("update", err(502, None), "not retried automatically"),
        ("create", err(400, 1002), "malformed"),
        ("create", err(200, None), "response was unreadable"),
        ("create", err(None, None, transport=Transport.NOT_SENT), "nothing was sent"),
        ("update", err(None, None, transport=Transport.MAYBE_SENT), "may have happened"),
    ],
)
def test_explanations_by_status_and_code(op: str, error: LinqCallError, needle: str) -> None:
    assert needle in explain(op, PHONE, error)  # type: ignore[arg-type]


def test_failure_line_is_one_line_with_status_code_message_and_trace() -> None:
    line = failure_line("create", PHONE, err(409, 2014, "Contact card\nalready exists"))
    assert "\n" not in line
    assert line.startswith(f"card create {PHONE}: a card already exists")
    assert "HTTP 409" in line
    assert "code 2014" in line
    assert "Contact card already exists" in line
    assert f"trace {TRACE}" in line


def test_writes_left_are_shown_for_errors_that_spent_one() -> None:
    line = failure_line("update", PHONE, err(500, 2022), writes_left=1)
    assert "(1 of 3 writes left in this 10-minute window)" in line


def card(active: bool = True, first: str = "Acme", image: str | None = None) -> Card:
    return Card(PHONE, first, "Support", image, active)


def cache(active: bool = True, first: str | None = "Acme", image: str | None = None) -> CachedLine:
    return CachedLine(PHONE, first, "Support", image, active, dt.datetime(2026, 1, 1, tzinfo=dt.UTC))


@pytest.mark.parametrize(
    ("linq", "ours", "will", "needle"),
    [
        (card(True), cache(True), True, "active at Linq and in cardshare's cache"),
        (card(True, image="https://a.example/x.png"), cache(True), True, "cache differs in image"),
        (card(True, first="Acme Co"), cache(True), True, "cache differs in first name"),
        (card(True), cache(False), False, "cache stale (says inactive)"),
        (card(True), None, False, "not in cardshare's cache yet"),
        (card(False), cache(False), False, "card inactive at Linq"),
        (card(False), cache(True), False, "cache stale (says active)"),
        (None, cache(True), False, "shares fail with 2012"),
        (None, None, False, "create one with `cardshare card create`"),
    ],
)
def test_share_verdict_needs_both_linq_and_the_cache(
    linq: Card | None, ours: CachedLine | None, will: bool, needle: str
) -> None:
    got, reason = share_verdict(linq, ours)
    assert got is will
    assert needle in reason


def test_line_views_list_cards_and_cached_lines_without_a_card() -> None:
    other = CachedLine("+13334445555", None, None, None, False, None)
    views = line_views(
        [card(True)], {PHONE: cache(True), other.phone_number: other}, only=None, due={PHONE: 7}
    )
    assert [(v.phone_number, v.will_share, v.due_today) for v in views] == [
        ("+13334445555", False, 0),
        (PHONE, True, 7),
    ]
    assert views[0].to_json()["card"] is None
    only = line_views([], {}, only="+19998887777", due=None)
    assert [(v.phone_number, v.card, v.will_share) for v in only] == [("+19998887777", None, False)]


def test_render_table_aligns_columns_and_flattens_cells() -> None:
    out = render_table(["A", "LONGER"], [["x", None], ["multi\nline", True]])
    assert out.splitlines() == [
        "A           LONGER",
        "----------  ------",
        "x           -",
        "multi line  yes",
    ]
