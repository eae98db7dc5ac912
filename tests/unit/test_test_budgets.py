"""A test's own waits must run out before its pytest timeout, so a slow wait on a loaded machine
fails with its own message and figures instead of pytest-timeout's bare "Timeout".

Every drill, and every acceptance test whose waits (wait_until, settle, worker_consuming, sleeps)
could add up to more than the global timeout allows, carries `@pytest.mark.timeout(timeout_for(...))`
sized from the same constants it waits with (tests/support/procs.py).
"""

from __future__ import annotations

import ast
import tomllib
from collections.abc import Iterator
from pathlib import Path

from tests.support.procs import CONSUMING_S, timeout_for

ROOT = Path(__file__).resolve().parents[2]
GLOBAL_TIMEOUT = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["pytest"]["ini_options"][
    "timeout"
]
WAITS = {"wait_until": 1, "settle": 3}  # the argument that is the wait's timeout, by position


def functions_in(folder: str) -> Iterator[tuple[Path, ast.FunctionDef]]:
    for path in sorted((ROOT / "tests" / folder).glob("test_*.py")):
        for node in ast.parse(path.read_text()).body:
            if isinstance(node, ast.FunctionDef) and node.name.startswith("test_"):
                yield path, node


def timeout_mark(fn: ast.FunctionDef) -> ast.Call | None:
    for dec in fn.decorator_list:
        if isinstance(dec, ast.Call) and ast.unparse(dec.func) == "pytest.mark.timeout":
            return dec
    return None


def literal_waits(fn: ast.FunctionDef) -> float | None:
    """The sum of the waits written as numbers in `fn`; None when one is not a plain number."""
    total = 0.0
    for node in ast.walk(fn):
        if not isinstance(node, ast.Call):
            continue
        name = ast.unparse(node.func).rsplit(".", 1)[-1]
        arg: ast.expr | None = None
        if name in WAITS:
            position = WAITS[name]
            kw = [k.value for k in node.keywords if k.arg == "timeout"]
            arg = kw[0] if kw else (node.args[position] if len(node.args) > position else None)
        elif name == "worker_consuming":
            kw = [k.value for k in node.keywords if k.arg == "timeout"]
            arg = kw[0] if kw else ast.Constant(CONSUMING_S)
        elif ast.unparse(node.func) == "time.sleep" and node.args:
            arg = node.args[0]
        else:
            continue
        if not (isinstance(arg, ast.Constant) and isinstance(arg.value, int | float)):
            return None
        total += float(arg.value)
    return total


def test_every_drill_sizes_its_timeout_from_its_own_waits() -> None:
    bare = [
        f"{path.name}::{fn.name}"
        for path, fn in functions_in("drills")
        if (mark := timeout_mark(fn)) is None
        or not (
            mark.args
            and isinstance(mark.args[0], ast.Call)
            and ast.unparse(mark.args[0].func) == "timeout_for"
        )
    ]
    assert bare == [], "drills need @pytest.mark.timeout(timeout_for(...their waits...))"


def test_acceptance_tests_whose_waits_outgrow_the_global_timeout_size_their_own() -> None:
    bare, short = [], []
    for path, fn in functions_in("acceptance"):
        waits = literal_waits(fn)
        mark = timeout_mark(fn)
        if mark is None:
            if waits is None or timeout_for(waits) > GLOBAL_TIMEOUT:
                bare.append(f"{path.name}::{fn.name} (waits {waits})")
            continue
        sized = mark.args[0] if mark.args else None
        if not (isinstance(sized, ast.Call) and ast.unparse(sized.func) == "timeout_for"):
            bare.append(f"{path.name}::{fn.name} (not sized with timeout_for)")
            continue
        numbers = [
            float(a.value)
            for a in sized.args
            if isinstance(a, ast.Constant) and isinstance(a.value, int | float)
        ]
        if waits is not None and len(numbers) == len(sized.args) and waits > sum(numbers):
            short.append(f"{path.name}::{fn.name} (waits {waits}, sized for {sum(numbers)})")
    assert bare == [], "these need @pytest.mark.timeout(timeout_for(...their waits...))"
    assert short == [], "the timeout must be sized from every wait the test makes"


def test_timeout_for_leaves_room_for_setup_and_margin() -> None:
    assert timeout_for(240, 60, 30, 15) > 240 + 60 + 30 + 15 + 60
    assert timeout_for() >= 60
