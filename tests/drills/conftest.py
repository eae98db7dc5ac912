"""Fixtures for the fault drills (real processes; slow; skipped unless asked for).

The root fixtures are reused by name: `settings` gets the drills' short timings, `deps` sleeps
for real (real workers run on real time), and `world` and `today` follow from them.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.drills import drill_timing
from tests.support.procs import Procs
from worker.config import Settings
from worker.deps import Deps
from worker.queue.app import configure


@pytest.fixture
def settings(settings: Settings) -> Settings:
    return drill_timing(settings)


@pytest.fixture
def deps(deps: Deps) -> Deps:
    return dataclasses.replace(deps, sleep=time.sleep)


@pytest.fixture
def procs(settings: Settings, tmp_path: Path) -> Iterator[Procs]:
    configure(settings)
    p = Procs(settings, tmp_path)
    yield p
    p.stop_all()
