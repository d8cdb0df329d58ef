"""benchmarks/sweep.py's arithmetic on made-up timings: a run's wall time split around its
trials, the efficiency (no-Ray wall / sweep wall), min/median/max over rounds against the
targets, the concurrency a sweep runs at, and the check that both ran the same trials. The
benchmark itself runs sweeps (`python -m benchmarks.sweep --quick` smoke-tests it)."""

import importlib
import math
import subprocess
import sys

import pytest


@pytest.fixture(scope="module")
def bench():
    """benchmarks.sweep (benchmarks/ is a directory of the repository, not a package)."""
    return importlib.import_module("benchmarks.sweep")


def test_a_run_splits_into_fixed_cost_and_trials(bench):
    # launched at t=1000, first trial at 1008, last trial ended at 1090, exited 95 s after launch
    got = bench.phases(launch=1000.0, wall=95.0, first_start=1008.0, last_end=1090.0)
    assert got["before_first_trial_s"] == pytest.approx(8.0)
    assert got["after_last_trial_s"] == pytest.approx(5.0)
    assert got["fixed_s"] == pytest.approx(13.0)
    assert got["trials_s"] == pytest.approx(82.0)
    assert got["fixed_s"] + got["trials_s"] == pytest.approx(got["wall_s"])


def test_efficiency_is_the_runs_without_ray_over_the_sweep(bench):
    assert bench.efficiency(90.0, 100.0) == pytest.approx(0.9)
    assert bench.efficiency(100.0, 100.0) == 1.0
    assert math.isnan(bench.efficiency(90.0, 0.0))
    sweep = bench.phases(1000.0, 100.0, 1006.0, 1096.0)  # fixed 10 s
    no_ray = bench.phases(2000.0, 92.0, 2001.5, 2091.0)
    row = bench.round_row(sweep, no_ray)
    assert set(row) == set(bench.STATS)
    assert row["efficiency"] == pytest.approx(0.92)
    assert row["fixed_s"] == pytest.approx(10.0)
    assert row["no_ray_before_first_trial_s"] == pytest.approx(1.5)


def rows(bench, efficiencies, fixed):
    out = []
    for eff, cost in zip(efficiencies, fixed, strict=True):
        sweep = bench.phases(0.0, 100.0, cost / 2, 100.0 - cost / 2)
        out.append(bench.round_row(sweep, bench.phases(0.0, 100.0 * eff, 1.0, 100.0 * eff - 1)))
    return out


def test_rounds_summarise_to_min_median_max_against_the_targets(bench):
    summary = bench.summarise(rows(bench, [0.95, 0.91, 0.88], [8.0, 9.5, 12.0]))
    stats = summary["stats"]
    assert summary["rounds"] == 3
    assert stats["efficiency"]["min"] == pytest.approx(0.88)
    assert stats["efficiency"]["median"] == pytest.approx(0.91)
    assert stats["efficiency"]["max"] == pytest.approx(0.95)
    assert stats["fixed_s"] == {"min": 8.0, "median": 9.5, "max": 12.0}
    assert summary["targets"]["median_meets"] and not summary["targets"]["every_round_meets"]
    good = bench.summarise(rows(bench, [0.95, 0.92, 0.93], [8.0, 9.0, 10.0]))["targets"]
    assert good["median_meets"] and good["every_round_meets"]
    slow = bench.summarise(rows(bench, [0.95, 0.92, 0.93], [8.0, 11.0, 12.0]))["targets"]
    assert not slow["median_meets"]  # efficient enough, but too much fixed cost
    text = bench.table({"summary": summary})
    assert "median met, every round NOT met (3 rounds)" in text


def test_the_concurrency_is_the_sweeps(bench, monkeypatch):
    monkeypatch.setattr(bench.os, "cpu_count", lambda: 2)
    assert bench.concurrency(2, 1.0, 0.0, 4) == 2  # the quickstart on 2 cores
    assert bench.concurrency(0, 1.0, 0.0, 4) == 2  # as many as fit
    assert bench.concurrency(4, 2.0, 0.0, 4) == 1  # whole trials of 2 CPUs on 2 cores
    assert bench.concurrency(3, 0.5, 0.0, 2) == 2  # never more than the trials


def test_both_runs_ran_the_same_trials(bench):
    sweep = {"p_drop=0": {"probe/digit/pre": 0.5}, "p_drop=1": {"probe/digit/pre": 0.25}}
    same = {"p_drop=0": {"probe/digit/pre": 0.5}, "p_drop=1": {"probe/digit/pre": 0.25}}
    assert bench.same_trials(sweep, same, "probe/digit/pre") == 0.0
    other = {**same, "p_drop=1": {"probe/digit/pre": 0.375}}
    assert bench.same_trials(sweep, other, "probe/digit/pre") == pytest.approx(0.125)
    assert math.isnan(bench.same_trials(sweep, {"p_drop=0": {}}, "probe/digit/pre"))


def test_the_options_reach_headsweep_as_given(bench):
    assert bench.spec_options(True, ["train.epochs=2"]) == ["--smoke", "--set=train.epochs=2"]
    assert bench.spec_options(False, []) == []


def test_the_cpu_of_descendants_never_waited_for_is_the_runs_own(bench):
    """A sweep's Ray processes are its driver's descendants that nobody waits for: the run's
    own CPU must count them (sampled from /proc), not leave them to the others' share."""
    burn = "import time; t = time.process_time(); exec('while time.process_time() - t < 1.0: pass')"
    child = (
        "import subprocess, sys, time\n"
        f"subprocess.Popen([sys.executable, '-c', {burn!r}])\n"  # never waited for
        "time.sleep(4)\n"
    )
    with bench.Load(period=0.2) as load:
        subprocess.run([sys.executable, "-c", child], check=True)
    assert load.own_seconds() >= 0.9  # the grandchild's second of CPU, at least
    assert load.others is not None
