"""Sentry and OpenTelemetry: off (and not even imported) unless their variable is set; on, the
spans of one share carry its chat id and Linq's trace id and never a secret, and Sentry events
leave with every secret masked. A real worker with both on and no backend reachable is in
tests/acceptance/test_worker_lifecycle.py."""

from __future__ import annotations

import datetime as dt
import json
import os
import subprocess
import sys
from collections.abc import Iterator

import pytest
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from sqlalchemy import text

from tests.support.receiver import SECRET
from tests.support.servers import API_KEY
from tests.support.world import World
from worker.config import Secret, Settings
from worker.deps import Deps
from worker.embedded import free_port
from worker.ops import observability, tracing
from worker.sharing.share import Outcome, share_chat

OURS = ("CARDSHARE_", "LINQ_", "SENTRY_", "OTEL_")
CLEAN_ENV = {k: v for k, v in os.environ.items() if not k.startswith(OURS)}
# What cardshare would import to switch them on. (redis-py itself imports OpenTelemetry's metrics
# API whenever the package is installed; that is not tracing, and not ours.)
SWITCHED_ON = (
    "sentry_sdk",
    "opentelemetry.sdk.trace",
    "opentelemetry.instrumentation",
    "opentelemetry.exporter",
)


def python(code: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", code],
        env={**CLEAN_ENV, **env},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_off_by_default_and_then_nothing_is_even_imported() -> None:
    done = python(
        "import sys\n"
        "import worker.celery_app, worker.queue.tasks, worker.cli.main\n"
        "from worker.config import Settings\n"
        "from worker.ops import observability, tracing\n"
        "print(observability.setup(Settings.from_env(), 'worker'), tracing.enabled())\n"
        f"print(sorted(m for m in sys.modules if m.startswith({SWITCHED_ON!r})))\n"
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == ["[] False", "[]"]


def test_a_switch_without_its_extra_is_a_one_line_error_naming_the_variable() -> None:
    done = python(
        "import builtins\n"
        "real = builtins.__import__\n"
        "def no_sentry(name, *a, **k):\n"
        "    if name.startswith('sentry_sdk'): raise ImportError(name)\n"
        "    return real(name, *a, **k)\n"
        "builtins.__import__ = no_sentry\n"
        "from worker.config import Settings\n"
        "from worker.errors import ConfigError\n"
        "from worker.ops import observability\n"
        "try:\n"
        "    observability.setup(Settings.from_env(), 'worker')\n"
        "except ConfigError as exc:\n"
        "    print(exc)\n",
        SENTRY_DSN="http://public@127.0.0.1:9/1",
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().startswith("SENTRY_DSN")
    assert "pip install 'cardshare[sentry]'" in done.stdout


@pytest.fixture
def spans(settings: Settings) -> Iterator[InMemorySpanExporter]:
    exporter = InMemorySpanExporter()
    on = settings.replace(otel_endpoint=f"http://127.0.0.1:{free_port()}")
    observability._setup_otel(on, "worker", exporter=exporter)
    try:
        yield exporter
    finally:
        observability.shutdown()
    assert not tracing.enabled()


def test_the_spans_of_one_share_carry_its_chat_id_and_linqs_trace_id_and_no_secret(
    spans: InMemorySpanExporter, world: World, deps: Deps, today: dt.date
) -> None:
    deps = Deps(
        settings=deps.settings.replace(webhook_secrets=(Secret(SECRET),)),
        sessions=deps.sessions,
        client=deps.client,
        sleep=deps.sleep,
        pacer=deps.pacer,  # cardshare never shares unpaced
    )
    world.line()
    chat = world.chat()
    world.sim.add_faults([{"path": "/share_contact_card$", "status": 503, "code": 3006, "times": 1}])
    assert share_chat(chat, today, deps, task_id="task-1").outcome is Outcome.SHARED
    with deps.sessions() as s:
        traces = [r[0] for r in s.execute(text("SELECT trace_id FROM attempts ORDER BY attempt_no"))]
    finished = spans.get_finished_spans()
    by_name: dict[str, list] = {}
    for span in finished:
        by_name.setdefault(span.name, []).append(span)
    (share,) = by_name["cardshare.share"]
    assert share.attributes is not None
    assert share.attributes["cardshare.chat_id"] == str(chat)
    assert share.attributes["cardshare.outcome"] == "shared"
    calls = by_name["linq.share_contact_card"]
    assert [dict(c.attributes or {})["http.status"] for c in calls] == [503, 204]
    assert [dict(c.attributes or {})["linq.trace_id"] for c in calls] == traces
    assert all(t for t in traces)
    # httpx's and psycopg's spans of this share: in its trace, and carrying its chat id too.
    # (The test's own set-up wrote rows and called the simulator's admin API: other traces.)
    mine = [s for s in finished if s.context.trace_id == share.context.trace_id]
    attrs = {id(s): dict(s.attributes or {}) for s in mine}
    http = [s for s in mine if attrs[id(s)].get("http.request.method") or attrs[id(s)].get("http.method")]
    sql = [s for s in mine if attrs[id(s)].get("db.system") in ("postgresql", "postgres")]
    assert len(http) == 2  # the 503 and the 204
    assert len(sql) >= 3  # load, claim, record
    assert [s.name for s in mine if attrs[id(s)].get("cardshare.chat_id") != str(chat)] == []
    dump = "\n".join(s.to_json() for s in finished)
    for secret in (
        API_KEY,
        SECRET,
        SECRET.removeprefix("whsec_"),
        "Bearer ",
        "authorization",
        "Authorization",
    ):
        assert secret not in dump


def test_sentry_events_leave_with_every_secret_masked() -> None:
    done = python(
        "import json\n"
        "import sentry_sdk\n"
        "from worker.config import Settings\n"
        "from worker.logs import register_secret\n"
        "from worker.ops import observability\n"
        "settings = Settings.from_env()\n"
        "register_secret(settings.linq_api_key.get())\n"
        "print(observability.setup(settings, 'worker'))\n"
        "client = sentry_sdk.get_client()\n"
        "sent = []\n"
        "client.transport.capture_envelope = sent.append  # what would have gone to Sentry\n"
        "options = client.options\n"
        "print(sorted(client.integrations), options['send_default_pii'],"
        " options['include_local_variables'])\n"
        "try:\n"
        "    raise RuntimeError('Linq refused Bearer ' + settings.linq_api_key.get())\n"
        "except RuntimeError:\n"
        "    sentry_sdk.capture_exception()\n"
        "client.flush()\n"
        "print(json.dumps([item.payload.json for env in sent for item in env.items if item.payload.json]))\n",
        SENTRY_DSN=f"http://public@127.0.0.1:{free_port()}/1",
        LINQ_API_V3_API_KEY=API_KEY,
    )
    assert done.returncode == 0, done.stderr
    on, integrations, payloads = done.stdout.splitlines()
    assert on == "['sentry']"
    assert "'celery'" in integrations
    assert integrations.endswith("False False")
    events = json.loads(payloads)
    assert events
    text_ = json.dumps(events)
    assert API_KEY not in text_
    assert "Linq refused Bearer ****" in text_
