"""The house rules of worker/ (README, "Architecture"), checked on the source: no import circle,
SQL only in store/, one door to Linq, settings read at the entry points only, comments citing
docs/ inside the repository, and tests that import helpers from tests/support only."""

from __future__ import annotations

import ast
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
WORKER = ROOT / "worker"


def modules() -> dict[str, Path]:
    """Every module of the worker package by dotted name."""
    out = {}
    for path in sorted(WORKER.rglob("*.py")):
        parts = path.relative_to(ROOT).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        out[name] = path
    return out


def parse(path: Path) -> ast.Module:
    return ast.parse(path.read_text(), filename=str(path))


def imported(node: ast.Import | ast.ImportFrom, known: set[str]) -> Iterator[str]:
    """The worker modules an import statement loads (a `from pkg import submodule` included)."""
    if isinstance(node, ast.Import):
        yield from (a.name for a in node.names if a.name in known)
        return
    base = node.module or ""
    if base in known:
        yield base
    for alias in node.names:
        if f"{base}.{alias.name}" in known:
            yield f"{base}.{alias.name}"


def module_level_imports(tree: ast.Module) -> Iterator[ast.Import | ast.ImportFrom]:
    """Imports that run when the module is imported (not those inside functions)."""
    stack: list[ast.AST] = list(tree.body)
    while stack:
        node = stack.pop()
        if isinstance(node, ast.Import | ast.ImportFrom):
            yield node
        elif isinstance(node, ast.If | ast.Try | ast.With):
            stack.extend(ast.iter_child_nodes(node))
        elif isinstance(node, ast.ClassDef):
            stack.extend(node.body)


def graph() -> dict[str, set[str]]:
    mods = modules()
    known = set(mods)
    edges: dict[str, set[str]] = {}
    for name, path in mods.items():
        deps = {m for node in module_level_imports(parse(path)) for m in imported(node, known)}
        edges[name] = deps - {name}
    return edges


def test_the_import_graph_has_no_circle() -> None:
    edges = graph()
    seen: set[str] = set()
    path: list[str] = []

    def visit(node: str) -> None:
        if node in path:
            raise AssertionError("import circle: " + " -> ".join([*path[path.index(node) :], node]))
        if node in seen:
            return
        path.append(node)
        for nxt in sorted(edges[node]):
            visit(nxt)
        path.pop()
        seen.add(node)

    for node in sorted(edges):
        visit(node)


def test_every_module_imports_in_a_fresh_interpreter_in_sorted_order() -> None:
    names = sorted(modules())
    code = "import importlib, sys\nfor name in sys.argv[1:]:\n    importlib.import_module(name)\n"
    done = subprocess.run(
        [sys.executable, "-c", code, *names], capture_output=True, text=True, timeout=120, check=False
    )
    assert done.returncode == 0, done.stderr


# Imports of worker modules made inside a function, each where a figure justifies it (issue 17.5,
# `python -X importtime` on the 2-core box): what a command never uses is not loaded at its start.
LAZY = {
    # The CLI loads only the module of the command it runs (the whole CLI: ~1.2 s of CPU).
    ("worker.entry", "worker.cli.common"),
    ("worker.entry", "worker.cli.main"),
    ("worker.entry", "worker.ops.healthcheck"),
    # Against running servers, `status`/`history`/`check` skip the embedded servers' code
    # (~0.07-0.15 s) and partition upkeep (~0.05-0.1 s).
    ("worker.bootstrap", "worker.embedded"),
    ("worker.bootstrap", "worker.ops.retention"),
    # Linq clients and the sandbox's Linq calls bring httpx (~0.1 s): made on first use.
    ("worker.runtime", "worker.linq"),
    ("worker.runtime", "worker.sharing.sandbox"),
    ("worker.sharing.sandbox", "worker.linq"),
    # `status` and `history` against running servers read through store.plain and skip
    # SQLAlchemy (~0.45 s: worker/store/sql.py); every other command boots as before.
    ("worker.cli.common", "worker.bootstrap"),
    ("worker.ops.status", "worker.store.session"),
    # redis-py (0.1-0.25 s, with OpenTelemetry's SDK when installed) after the database's reads.
    ("worker.ops.status", "worker.ops.broker_view"),
    # rich (~0.1 s) only for the table; `status --json` skips it.
    ("worker.cli.reads", "worker.cli.status_table"),
    # Only `check --simulator` reads the simulator's log over httpx.
    ("worker.cli.reads", "worker.simulator"),
    ("worker.cli.reads", "worker.simulator.client"),
    # `share` (enqueueing) and `recover` against running servers write through store.plain too:
    # SQLAlchemy, the runtime and the share path only for `share --wait` or a full boot ...
    ("worker.cli.share", "worker"),
    ("worker.cli.share", "worker.runtime"),
    ("worker.cli.share", "worker.sharing"),
    ("worker.cli.share", "worker.sharing.share"),
    ("worker.cli.share", "worker.store.session"),
    ("worker.cli.share", "worker.queue.tasks"),
    # ... redis-py after the database's first reads ...
    ("worker.cli.share", "worker.ops.broker_view"),
    # ... and Celery (~0.5 s) only for a message to publish.
    ("worker.queue.lazy", "worker.queue"),
    ("worker.queue.lazy", "worker.queue.app"),
    ("worker.queue.lazy", "worker.queue.publish"),
}


def test_imports_of_worker_modules_are_at_module_level() -> None:
    """Imports inside functions only where LAZY names them (the healthcheck must not load the
    CLI, a read-only command not Celery or httpx: measured)."""
    known = set(modules())
    inside = set()
    for name, path in modules().items():
        tree = parse(path)
        top = set(map(id, module_level_imports(tree)))
        for node in ast.walk(tree):
            if not isinstance(node, ast.Import | ast.ImportFrom) or id(node) in top:
                continue
            inside |= {(name, target) for target in imported(node, known)}
    # The simulator is a separate program that only shares the package (it stays as it was).
    assert {pair for pair in inside if not pair[0].startswith("worker.simulator")} <= LAZY


SQL = re.compile(r"^\s*(SELECT|INSERT INTO|UPDATE \w+ SET|DELETE FROM|WITH \w+ AS \()", re.IGNORECASE)
# Server administration of the embedded development PostgreSQL, not cardshare's tables.
SQL_ELSEWHERE = {"worker.embedded"}


def test_sql_lives_in_store() -> None:
    found = []
    for name, path in modules().items():
        if name.startswith("worker.store") or name in SQL_ELSEWHERE or name.startswith("worker.simulator"):
            continue
        tree = parse(path)
        for node in ast.walk(tree):
            if isinstance(node, ast.Constant) and isinstance(node.value, str) and SQL.match(node.value):
                found.append(f"{name}:{node.lineno}")
            if not isinstance(node, ast.ImportFrom) or node.module != "sqlalchemy":
                continue
            if any(a.name == "text" for a in node.names):
                found.append(f"{name}:{node.lineno} imports sqlalchemy.text")
    assert found == []


def test_linq_gateway_is_the_only_door_to_linq() -> None:
    found = []
    for name, path in modules().items():
        if name == "worker.linq":
            continue
        for node in ast.walk(parse(path)):
            if isinstance(node, ast.Import) and any(a.name.split(".")[0] == "linq" for a in node.names):
                found.append(f"{name}:{node.lineno} imports linq")
            if isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] == "linq":
                found.append(f"{name}:{node.lineno} imports linq")
            if isinstance(node, ast.Attribute) and node.attr == "sdk":
                found.append(f"{name}:{node.lineno} touches .sdk")
    assert found == []


def test_settings_are_read_from_the_environment_only_at_entry_points() -> None:
    """CLI commands (cli.common), `celery -A worker.celery_app`, the sandbox child, the healthcheck."""
    callers = set()
    for name, path in modules().items():
        for node in ast.walk(parse(path)):
            if (
                isinstance(node, ast.Call)
                and isinstance(node.func, ast.Attribute)
                and node.func.attr == "from_env"
                and name != "worker.config"
            ):
                callers.add(name)
    assert callers == {
        "worker.cli.common",
        "worker.celery_app",
        "worker.sharing.sandbox",
        "worker.ops.healthcheck",
    }


OUTSIDE = re.compile(r"linq-api\.md|measured-facts\.md|LAYOUT\.md|STYLE\.md|/work/|(?<![\w/])decisions\.md")
CITATION = re.compile(r"docs/([\w-]+\.md)((?:\s*§[\d.]+(?:-§?[\d.]+)?,?)*)")


def cited_files() -> Iterator[Path]:
    for top in ("worker", "tests", "bench", "migrations"):
        yield from (ROOT / top).rglob("*.py")
    yield ROOT / "README.md"
    yield from (ROOT / "docs").glob("*.md")


def test_comments_cite_docs_inside_the_repository() -> None:
    outside = []
    for path in cited_files():
        if path == Path(__file__):
            continue
        for number, line in enumerate(path.read_text().splitlines(), 1):
            if OUTSIDE.search(line) and "docs/decisions.md" not in line and "(decisions.md)" not in line:
                outside.append(f"{path.relative_to(ROOT)}:{number}: {line.strip()}")
    assert outside == []


def test_every_cited_section_exists() -> None:
    missing = []
    for path in cited_files():
        for doc, sections in CITATION.findall(path.read_text()):
            target = ROOT / "docs" / doc
            if not target.exists():
                missing.append(f"{path.relative_to(ROOT)}: docs/{doc}")
                continue
            text = target.read_text()
            for section in re.findall(r"§([\d.]+)", sections):
                if not re.search(rf"§{re.escape(section)}\b", text):
                    missing.append(f"{path.relative_to(ROOT)}: docs/{doc} §{section}")
    assert missing == []


def test_tests_import_helpers_from_support_only() -> None:
    bad = []
    for path in (ROOT / "tests").rglob("*.py"):
        for node in ast.walk(parse(path)):
            if isinstance(node, ast.ImportFrom):
                module = node.module or ""
                if node.level or module.endswith("conftest") or re.search(r"(^|\.)test_\w+$", module):
                    bad.append(f"{path.relative_to(ROOT)}:{node.lineno} from {'.' * node.level}{module}")
                elif module.startswith("tests.") and not module.startswith("tests.support"):
                    bad.append(f"{path.relative_to(ROOT)}:{node.lineno} from {module}")
    assert bad == []
