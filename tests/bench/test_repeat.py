"""The pure parts of bench/repeat.py: medians and spreads, the background-CPU arithmetic, the
run bookkeeping (with a scripted meter: nothing here depends on timing or on the box's load)."""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path
from typing import NamedTuple

import pytest

from bench import repeat
from bench.repeat import Background, CpuReading, Spread


class SysTimes(NamedTuple):  # psutil.cpu_times() on Linux
    user: float = 0
    nice: float = 0
    system: float = 0
    idle: float = 0
    iowait: float = 0
    irq: float = 0
    softirq: float = 0
    steal: float = 0
    guest: float = 0
    guest_nice: float = 0


class ProcTimes(NamedTuple):  # psutil.Process().cpu_times() on Linux
    user: float = 0
    system: float = 0
    children_user: float = 0
    children_system: float = 0
    iowait: float = 0


def test_median_and_range_of_odd_and_even_runs() -> None:
    assert repeat.summarize([212, 141, 180]) == Spread(180, 141, 212, 3)
    assert repeat.summarize([4, 1, 3, 2]) == Spread(2.5, 1, 4, 4)
    assert repeat.summarize([7]) == Spread(7, 7, 7, 1)


def test_summarize_nothing_is_an_error() -> None:
    with pytest.raises(ValueError, match="no values"):
        repeat.summarize([])


def test_spread_is_range_over_median() -> None:
    assert Spread(200, 150, 250, 3).spread_pct == 50
    assert Spread(5, 5, 5, 3).spread_pct == 0
    assert Spread(0, 0, 0, 3).spread_pct == 0
    assert Spread(0, -1, 1, 3).spread_pct == math.inf


def test_reproduces_means_the_rerun_median_lies_in_the_published_range() -> None:
    published = {"a": Spread(347, 310, 402, 5), "b": Spread(4.3, 4.1, 4.6, 5), "only_old": Spread(1, 1, 1, 1)}
    rerun = {"a": Spread(180, 141, 212, 8), "b": Spread(4.6, 4.0, 5.0, 3), "only_new": Spread(2, 2, 2, 1)}
    assert repeat.reproduces(published, rerun) == [("a", False), ("b", True)]


def test_flatten_keeps_numeric_leaves_by_path() -> None:
    figures = {
        "run": 1,
        "noisy": True,
        "label": "x",
        "missing": None,
        "samples": [1, 2],
        "cardshare": {"per_s": 347.1, "cpu_ms_per_share": {"workers": 4.3, "simulator+sweep": 0.59}},
    }
    assert repeat.flatten(figures) == {
        "run": 1.0,
        "cardshare.per_s": 347.1,
        "cardshare.cpu_ms_per_share.workers": 4.3,
        "cardshare.cpu_ms_per_share.simulator+sweep": 0.59,
    }


def test_summarize_runs_per_figure_over_the_runs_that_have_it() -> None:
    runs = [
        {"run": 1, "cardshare": {"per_s": 150.0}, "baseline": {"per_s": 10.0}},
        {"run": 2, "cardshare": {"per_s": 210.0}},
        {"run": 3, "cardshare": {"per_s": 180.0}, "baseline": {"per_s": 12.0}},
    ]
    summary = repeat.summarize_runs(runs)
    assert set(summary) == {"cardshare.per_s", "baseline.per_s"}
    assert summary["cardshare.per_s"] == Spread(180, 150, 210, 3)
    assert summary["baseline.per_s"] == Spread(11, 10, 12, 2)


def test_box_busy_leaves_out_idle_iowait_and_guest_and_keeps_steal_apart() -> None:
    # guest is already counted inside user on Linux
    times = SysTimes(user=10, nice=1, system=4, idle=100, iowait=7, irq=0.5, softirq=0.5, steal=3, guest=2)
    assert repeat.box_seconds(times) == (16.0, 3.0)


def test_a_process_counts_the_children_it_has_reaped() -> None:
    assert repeat.process_seconds(ProcTimes(user=1.5, system=0.5, children_user=2, children_system=1)) == 5.0


def test_others_is_the_box_busy_minus_ours_as_share_of_all_cores() -> None:
    before = CpuReading(wall=100.0, busy=50.0, steal=1.0, ours=20.0)
    # 10 s on 2 cores = 20 CPU-seconds of capacity; the box was busy 8 s, 5 of them ours
    after = CpuReading(wall=110.0, busy=58.0, steal=2.0, ours=25.0)
    bg = repeat.background(before, after, cpus=2)
    assert bg.seconds == pytest.approx(10)
    assert bg.others_pct == pytest.approx(15)
    assert bg.ours_pct == pytest.approx(25)
    assert bg.steal_pct == pytest.approx(5)
    assert not bg.noisy(20)  # 15 + 5 is not above 20
    assert bg.noisy(19.9)


def test_others_never_goes_below_zero() -> None:
    # tick rounding can make our processes' sum exceed the box's
    bg = repeat.background(CpuReading(0, 10, 0, 5), CpuReading(1, 11, 0, 6.02), cpus=2)
    assert bg.others_pct == 0


def test_cell_shows_median_range_and_spread() -> None:
    assert repeat.cell(Spread(180.0, 141.0, 212.0, 8)) == "180.0 (141.0-212.0, 39%)"
    assert repeat.cell(Spread(4.3, 4.3, 4.3, 3), 2) == "4.30"
    assert repeat.cell(Spread(1234.5, 1000, 1300, 3), 0) == "1,234 (1,000-1,300, 24%)"


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser()
    p.add_argument("--chats", type=int, default=20000)
    p.add_argument("--baseline-seconds", type=float, default=60)
    repeat.add_arguments(p, quick={"chats": 1000, "baseline_seconds": 10})
    return p


def test_quick_replaces_only_the_sizes_not_given() -> None:
    args = repeat.parse(parser(), ["--quick", "--chats", "3000"])
    assert (args.chats, args.baseline_seconds, args.runs) == (3000, 10, 3)
    args = repeat.parse(parser(), ["--runs", "5"])
    assert (args.chats, args.baseline_seconds, args.runs, args.noisy_above) == (20000, 60, 5, 20.0)


def test_runs_must_be_positive() -> None:
    with pytest.raises(SystemExit):
        repeat.parse(parser(), ["--runs", "0"])


class ScriptedMeter:
    """Readings 10 s apart on 2 cores (20 CPU-seconds of capacity between two readings); the
    box's busy time grows by the next scripted value after each reading, all of it others'."""

    cpus = 2

    def __init__(self, others: list[float]) -> None:
        self.t = self.busy = 0.0
        self.others = iter(others)

    def read(self) -> CpuReading:
        reading = CpuReading(self.t, self.busy, 0.0, 0.0)
        self.t += 10
        self.busy += next(self.others, 0.0)
        return reading


def test_bench_flags_noisy_runs_and_keeps_every_run_and_the_summary(tmp_path: Path) -> None:
    args = repeat.parse(parser(), ["--runs", "3", "--out", str(tmp_path / "e2e.json")])
    # four readings per run: run starts, cardshare starts, cardshare ends, run ends
    meter = ScriptedMeter([*(0, 2, 0, 0), *(0, 0, 0, 0), *(0, 10, 0, 0)])
    bench = repeat.Bench("e2e", args, meter=meter)
    for run in bench.runs():
        with run.measure("cardshare"):
            pass
        run.figures["cardshare"] = {"per_s": [150.0, 180.0, 210.0][run.number - 1]}
    path = bench.finish()
    assert path == tmp_path / "e2e.json"
    data = json.loads(path.read_text())
    assert [r["noisy"] for r in data["runs"]] == [False, False, True]
    assert data["noisy_runs"] == [3]
    assert data["runs"][0]["background"]["cardshare"]["others_pct"] == 10.0
    assert data["runs"][2]["background"]["cardshare"]["others_pct"] == 50.0
    assert data["runs"][2]["background"]["run"]["others_pct"] == pytest.approx(50 / 3, abs=0.1)
    assert data["summary"]["cardshare.per_s"] == {
        "median": 180.0,
        "min": 150.0,
        "max": 210.0,
        "spread_pct": 33.3,
        "n": 3,
    }
    assert data["quick"] is False
    assert data["machine"]["cpus"] >= 1
    assert "celery" in data["machine"]["packages"]


def test_a_window_measured_twice_in_a_run_is_a_mistake() -> None:
    run = repeat.Run(1, ScriptedMeter([]))
    with run.measure("cardshare"):
        pass
    with pytest.raises(ValueError, match="twice"), run.measure("cardshare"):
        pass


def test_background_as_dict_rounds() -> None:
    assert Background(10.004, 12.345, 0.0, 40.0).as_dict() == {
        "seconds": 10.0,
        "others_pct": 12.3,
        "steal_pct": 0.0,
        "ours_pct": 40.0,
    }
