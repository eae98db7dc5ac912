"""Run one `cardshare` command as the console script does, and report on stderr how long the
process took from its first line of Python to its first PostgreSQL connection (its first query
follows on that connection): `STARTUP first_connect_s=0.412`.

python -m bench.startup_probe status --json      (DATABASE_URL, REDIS_URL set; run from the repo)

psycopg is imported first so both its connect functions can be wrapped; it is imported by every
command that reaches PostgreSQL anyway, so this moves its cost, it does not add any. The one
import of worker/ outside bench/common.py: importing that module first would load half of
cardshare before the clock starts.
"""

from __future__ import annotations

import atexit
import sys
import time

T0 = time.perf_counter()

import psycopg  # noqa: E402 - after T0 on purpose

first: list[float] = []
_class_connect = psycopg.Connection.connect.__func__  # type: ignore[attr-defined]
_module_connect = psycopg.connect


def _mark() -> None:
    if not first:
        first.append(time.perf_counter() - T0)


def _connect_method(cls: type, /, *args: object, **kwargs: object) -> object:
    _mark()
    return _class_connect(cls, *args, **kwargs)


def _connect_function(*args: object, **kwargs: object) -> object:
    _mark()
    return _module_connect(*args, **kwargs)  # type: ignore[arg-type]


psycopg.Connection.connect = classmethod(_connect_method)  # type: ignore[method-assign, assignment]
psycopg.connect = _connect_function  # type: ignore[assignment]
atexit.register(lambda: sys.stderr.write(f"STARTUP first_connect_s={first[0] if first else -1:.4f}\n"))

if __name__ == "__main__":
    sys.argv = ["cardshare", *sys.argv[1:]]
    from worker.entry import main

    main()
