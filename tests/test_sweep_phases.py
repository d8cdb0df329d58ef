"""The driver's start and end without waiting where nothing needs to wait (issue 12): MLflow's
store opens on a thread while Ray starts, a sweep name already taken is still refused before any
trial (before Ray, for a local store), the parent run still ends, the phase times land on the
parent run, and the analysis stack loads while the last trial runs. Ray and Tune are stand-ins
here (no Ray runtime): what is tested is the driver's order of things."""

import pickle
import threading
import time
from types import SimpleNamespace

import pytest
from conftest import TINY_BASE

from sweeps import driver, lifecycle, phases
from sweeps.locations import Locations, SweepError
from sweeps.spec import parse_spec
from sweeps.store import SqliteReader


def tiny_spec(name: str = "phased"):
    return parse_spec(
        {
            "name": name,
            "trainable": "contrastive",
            "base": TINY_BASE,
            "space": {"aug.p_drop": {"grid": [0.0, 0.5]}},
            "search": {"metric": "probe/digit/pre"},
            "resources": {"cpu": 1},
            "max_concurrent": 2,
        }
    )


class Stand:
    """Stand-ins for Ray and Tune, recording what the driver asked for and when."""

    def __init__(self, monkeypatch, ray_error: Exception | None = None) -> None:
        self.events: list[tuple[str, str]] = []  # (what, thread name)
        self.tracker_opened = threading.Event()
        self.ray_error = ray_error
        self.tuners = 0
        monkeypatch.setattr(driver, "nodes_for", lambda address: [driver.local_capacity()])
        monkeypatch.setattr(driver, "check_storage", lambda storage, address: None)
        monkeypatch.setattr(driver, "start_ray", self.start_ray)
        monkeypatch.setattr(lifecycle, "tune_statuses", lambda path: {"TERMINATED": 2})
        original = Locations.tracker
        stand = self

        def tracker(loc):
            found = original(loc)
            stand.events.append(("tracker", threading.current_thread().name))
            stand.tracker_opened.set()
            return found

        monkeypatch.setattr(Locations, "tracker", tracker)

        class Tuner:
            def __init__(self, *args, run_config, **kwargs) -> None:
                stand.tuners += 1
                self.callbacks = run_config.callbacks

            def fit(self) -> None:
                trials = [SimpleNamespace(status="RUNNING"), SimpleNamespace(status="RUNNING")]
                for callback in self.callbacks:
                    if isinstance(callback, phases.SweepClock):
                        callback.on_trial_start(0, trials, trials[0])
                        trials[0].status = "TERMINATED"
                        callback.on_trial_complete(0, trials, trials[0])
                        trials[1].status = "TERMINATED"
                        callback.on_trial_complete(0, trials, trials[1])

        monkeypatch.setattr(driver.tune, "Tuner", Tuner)

    def start_ray(self, address) -> None:
        self.events.append(("ray", threading.current_thread().name))
        # MLflow's side opens meanwhile, on another thread (without it this would wait 30 s)
        self.overlapped = self.tracker_opened.wait(timeout=30)
        if self.ray_error is not None:
            raise self.ray_error


def parents(loc: Locations, name: str):
    return SqliteReader(loc.local_store).parents(name) if loc.local_store.exists() else []


def test_mlflow_opens_while_ray_starts_and_the_phases_are_recorded(tmp_path, monkeypatch):
    stand = Stand(monkeypatch)
    loc = Locations.make(tmp_path / "runs")
    outcome = driver.run(tiny_spec(), "phased", loc, quiet=True)
    assert stand.overlapped and stand.tuners == 1
    main = threading.main_thread().name
    assert ("ray", main) in stand.events  # ray.init stays on the main thread (signal handlers)
    assert next(t for what, t in stand.events if what == "tracker") != main
    [parent] = parents(loc, "phased")
    assert parent.run_id == outcome.parent_run_id and parent.status == "FINISHED"
    times = phases.timing(parent.tags)
    assert {"run_start", "first_trial_start", "last_trial_end", "fit_end"} <= set(times)
    assert times["run_start"] <= times["first_trial_start"] <= times["last_trial_end"]
    assert times["last_trial_end"] <= times["fit_end"] <= time.time()


def test_a_name_already_taken_is_refused_before_ray_and_any_trial(tmp_path, monkeypatch):
    Stand(monkeypatch)
    loc = Locations.make(tmp_path / "runs")
    first = driver.run(tiny_spec(), "taken", loc, quiet=True)
    stand = Stand(monkeypatch)
    with pytest.raises(SweepError, match="a sweep named 'taken' already exists; continue it"):
        driver.run(tiny_spec(), "taken", loc, quiet=True)
    assert stand.events == [] and stand.tuners == 0  # no Ray, no tracker, no Tuner
    [parent] = parents(loc, "taken")
    assert parent.run_id == first.parent_run_id  # no second parent run


def test_without_the_quick_look_mlflow_still_refuses_the_name_before_any_trial(
    tmp_path, monkeypatch
):
    """A server's store (or one the read-only look cannot read): MLflow's own check, on the
    thread, refuses the name after Ray started and before the Tuner; also when Ray failed."""
    Stand(monkeypatch)
    loc = Locations.make(tmp_path / "runs")
    driver.run(tiny_spec(), "again", loc, quiet=True)
    monkeypatch.setattr(driver, "_named_in_local_store", lambda name, loc: False)
    for ray_error in (None, RuntimeError("Ray could not start")):
        stand = Stand(monkeypatch, ray_error)
        with pytest.raises(SweepError, match="a sweep named 'again' already exists"):
            driver.run(tiny_spec(), "again", loc, quiet=True)
        assert stand.tuners == 0 and len(parents(loc, "again")) == 1


def test_ray_failing_to_start_leaves_no_parent_run(tmp_path, monkeypatch):
    stand = Stand(monkeypatch, RuntimeError("Ray could not start"))
    loc = Locations.make(tmp_path / "runs")
    with pytest.raises(RuntimeError, match="Ray could not start"):
        driver.run(tiny_spec(), "no-ray", loc, quiet=True)
    assert stand.tuners == 0 and parents(loc, "no-ray") == []
    assert not (tmp_path / "runs" / "ray" / "no-ray" / ".headsweep-driver.json").exists()


def test_a_failing_tuner_still_ends_the_parent_run(tmp_path, monkeypatch):
    Stand(monkeypatch)

    def broken(self) -> None:
        raise RuntimeError("the Tuner broke")

    monkeypatch.setattr(driver.tune.Tuner, "fit", broken)
    loc = Locations.make(tmp_path / "runs")
    with pytest.raises(RuntimeError, match="the Tuner broke"):
        driver.run(tiny_spec(), "broken", loc, quiet=True)
    [parent] = parents(loc, "broken")
    assert parent.status == "FAILED" and "the Tuner broke" in parent.tags["headsweep.end_reason"]


def test_ray_stops_in_the_background_only_when_this_process_started_it(monkeypatch):
    stopped = []
    monkeypatch.setattr(driver.ray, "is_initialized", lambda: True)
    monkeypatch.setattr(driver.ray, "shutdown", lambda: stopped.append(True))
    monkeypatch.setitem(driver._state, "ray_started", False)  # a test's own Ray session
    assert driver.stop_ray_in_background() is None and stopped == []
    monkeypatch.setitem(driver._state, "ray_started", True)
    thread = driver.stop_ray_in_background()
    assert thread is not None
    thread.join(timeout=30)
    assert stopped == [True] and driver.stop_ray_in_background() is None  # once


# --------------------------------------------------------------------------- the clock


def trial(status: str) -> SimpleNamespace:
    return SimpleNamespace(status=status)


def test_the_clock_keeps_the_first_start_and_the_last_end(monkeypatch):
    loaded = []
    monkeypatch.setattr(phases.importlib, "import_module", loaded.append)
    clock = phases.SweepClock(total=3)
    a, b, c = trial("RUNNING"), trial("RUNNING"), trial("PENDING")
    clock.on_trial_start(0, [a, b, c], a)
    first = clock.first_start
    clock.on_trial_start(0, [a, b, c], b)
    assert clock.first_start == first
    a.status = "TERMINATED"
    clock.on_trial_complete(0, [a, b, c], a)
    assert loaded == []  # c still waits for the freed slot
    c.status = "RUNNING"
    b.status = "ERROR"
    clock.on_trial_error(0, [a, b, c], b)
    assert loaded == [phases.PREFETCH]  # every trial created, none waiting: a core is idle
    c.status = "TERMINATED"
    clock.on_trial_complete(0, [a, b, c], c)
    assert loaded == [phases.PREFETCH] and clock.last_end >= first

    tags = clock.tags(run_start=first - 5, fit_end=clock.last_end + 1, process_start=first - 7)
    times = phases.timing(tags)
    assert times["before_first_trial_s"] == pytest.approx(7, abs=1e-3)
    assert times["fit_end"] - times["last_trial_end"] == pytest.approx(1, abs=1e-3)
    assert phases.BEFORE_FIRST_TRIAL not in clock.tags(first - 5, first)  # not the first sweep

    restored = pickle.loads(pickle.dumps(clock))  # Tune stores callbacks with the experiment
    assert restored.total == 3 and restored.first_start is None and not restored.prefetched


def test_trials_not_yet_created_hold_the_prefetch_back(monkeypatch):
    """Grid search creates trials as slots free up: fewer trials than the sweep's total means
    more are coming."""
    loaded = []
    monkeypatch.setattr(phases.importlib, "import_module", loaded.append)
    clock = phases.SweepClock(total=4)
    a, b = trial("TERMINATED"), trial("RUNNING")
    clock.on_trial_complete(0, [a, b], a)
    assert loaded == []


def test_a_failing_prefetch_never_fails_the_sweep(monkeypatch):
    def broken(name: str) -> None:
        raise ImportError("no analysis here")

    monkeypatch.setattr(phases.importlib, "import_module", broken)
    clock = phases.SweepClock(total=1)
    done = trial("TERMINATED")
    clock.on_trial_complete(0, [done], done)
    assert clock.prefetched and clock.last_end is not None


def test_process_start_time_is_this_process_start():
    started = phases.process_start_time()
    if started is None:
        pytest.skip("no /proc here")
    assert 0 < time.time() - started < 24 * 3600


# --------------------------------------------------------------------------- the program's exit


def test_the_program_exits_with_its_code_after_the_exit_handlers_and_the_output(tmp_path):
    """`headsweep` (sweeps.cli.entry) skips only the interpreter's teardown: the exit handlers
    run, the output is all there, the exit code is the command's."""
    import subprocess
    import sys

    script = (
        "import atexit, sys\nfrom sweeps import cli\n"
        "atexit.register(lambda: print('handlers ran'))\n"
        "sys.argv = ['headsweep', *sys.argv[1:]]\ncli.entry()\n"
    )
    root = str(tmp_path / "runs")
    for args, code, out in (
        (["list", "--root", root], 0, "no sweeps yet\nhandlers ran\n"),
        (["status", "nope", "--root", root], 2, "handlers ran\n"),
        (["no-such-command"], 2, "handlers ran\n"),
    ):
        done = subprocess.run(
            [sys.executable, "-c", script, *args], capture_output=True, text=True, timeout=120
        )
        assert (done.returncode, done.stdout) == (code, out), done.stderr
