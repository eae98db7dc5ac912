"""The real `cardshare` command as a subprocess, with the environment a test's settings give it."""

from __future__ import annotations

import os
import subprocess
import sys

from worker.config import Settings


def env_for(settings: Settings, **extra: str) -> dict[str, str]:
    assert settings.database_url
    assert settings.redis_url
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CARDSHARE_", "LINQ_"))}
    env.update(
        DATABASE_URL=settings.database_url,
        REDIS_URL=settings.redis_url,
        LINQ_API_V3_API_KEY=settings.linq_api_key.get(),
        LINQ_API_V3_BASE_URL=settings.linq_base_url,
        CARDSHARE_RETRY_BASE_SECONDS="0.01",
        CARDSHARE_RETRY_CAP_SECONDS="0.05",
        CARDSHARE_DATA_DIR=str(settings.data_dir),
        CARDSHARE_LOG_FORMAT="json",
        # The fixture's pace (far above what a test shares): the default 60/min would hold most
        # of a test's chats for their slots. Tests of pace pass their own.
        CARDSHARE_LINE_SHARES_PER_MINUTE=str(settings.line_shares_per_minute),
        CARDSHARE_AT_RISK_SHARES_PER_MINUTE=str(settings.at_risk_shares_per_minute),
    )
    env.update(extra)
    return env


def cardshare(settings: Settings, *args: str, **extra: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", "from worker.cli.main import main; main()", *args],
        env=env_for(settings, **extra),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
