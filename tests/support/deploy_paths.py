"""What the distribution is built from: the sdist, the Docker build stage and its context."""

from __future__ import annotations

from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SOURCES = ["pyproject.toml", "setup.py", "README.md", "worker", "migrations"]
