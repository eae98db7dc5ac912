"""The README's configuration table lists every variable cardshare reads."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def variables_read() -> set[str]:
    names: set[str] = set()
    for path in [*(ROOT / "worker").rglob("*.py"), ROOT / "tests" / "conftest.py"]:
        text = path.read_text()
        names |= set(re.findall(r'take\("([A-Z0-9_]+)"', text))
        names |= set(
            re.findall(r'environ(?:\.get)?\(\s*"((?:CARDSHARE|LINQ|DATABASE|REDIS)[A-Z0-9_]*)"', text)
        )
    return names


def test_every_variable_is_in_the_configuration_table() -> None:
    readme = (ROOT / "README.md").read_text()
    table = set(re.findall(r"^\| `([A-Z0-9_]+)` \|", readme, flags=re.MULTILINE))
    missing = variables_read() - table
    assert not missing, f"README configuration table lacks {sorted(missing)}"
    assert {"DATABASE_URL", "REDIS_URL", "LINQ_API_V3_API_KEY", "CARDSHARE_TIMEZONE"} <= table


def test_readme_names_the_two_commands() -> None:
    readme = (ROOT / "README.md").read_text()
    assert "./scripts/demo" in readme
    assert "./scripts/test" in readme
    ci = (ROOT / ".ci" / "run").read_text()
    assert "./scripts/test" in ci
