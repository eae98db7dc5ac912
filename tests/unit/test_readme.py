"""The README's configuration table is the settings' declarations, and lists every variable read."""

from __future__ import annotations

import re
from pathlib import Path

from worker.config import ENV_NAMES, readme_rows

ROOT = Path(__file__).resolve().parents[2]

# Rows of the table that are not cardshare settings: read by a library, or by the tests and drills.
NOT_SETTINGS = {
    "PROMETHEUS_MULTIPROC_DIR",  # prometheus-client reads it
    "CARDSHARE_TEST_DATABASE_URL",
    "CARDSHARE_TEST_REDIS_URL",
    "CARDSHARE_DRILLS",
    "CARDSHARE_DRILL_SCALE",
    "CARDSHARE_DRILL_REPORT",
    "CARDSHARE_DRILL_CRASH_CHATS",  # worker/sharing/drill_hooks.py: a test switch, never a setting
}


def table_rows() -> list[str]:
    readme = (ROOT / "README.md").read_text()
    table = readme.split("| variable | default | meaning |\n| --- | --- | --- |\n", 1)[1]
    return list(re.findall(r"^\| `[A-Z0-9_]+` \|.*\|$", table.split("\n\n", 1)[0], flags=re.MULTILINE))


def variables_read() -> set[str]:
    """Every environment variable the code reads outside the settings' declarations."""
    names: set[str] = set()
    for path in [*(ROOT / "worker").rglob("*.py"), *(ROOT / "tests").rglob("*.py")]:
        text = path.read_text()
        names |= set(
            re.findall(
                r'environ(?:\.get)?\(\s*"((?:CARDSHARE|LINQ|DATABASE|REDIS|PROMETHEUS)[A-Z0-9_]*)"', text
            )
        )
        names |= set(re.findall(r'environ\[\s*"((?:CARDSHARE|LINQ|DATABASE|REDIS)[A-Z0-9_]*)"\s*\]', text))
    return names


def test_the_configuration_table_is_the_declarations() -> None:
    """One declaration per setting (worker/config.py) yields its README row: `python -m worker.config`."""
    rows = table_rows()
    declared = [r for r in rows if r.split("`")[1] in ENV_NAMES]
    assert declared == readme_rows(), "README configuration table differs: paste `python -m worker.config`"
    others = {r.split("`")[1] for r in rows} - set(ENV_NAMES)
    assert others == NOT_SETTINGS


def test_every_variable_is_in_the_configuration_table() -> None:
    table = {r.split("`")[1] for r in table_rows()}
    missing = (variables_read() | set(ENV_NAMES)) - table
    assert not missing, f"README configuration table lacks {sorted(missing)}"
    assert {"DATABASE_URL", "REDIS_URL", "LINQ_API_V3_API_KEY", "CARDSHARE_TIMEZONE"} <= table


def test_readme_names_the_two_commands() -> None:
    readme = (ROOT / "README.md").read_text()
    assert "./scripts/demo" in readme
    assert "./scripts/test" in readme
    ci = (ROOT / ".ci" / "run").read_text()
    assert "./scripts/test" in ci
