"""How a driver ends, whatever ends it: the MLflow parent run is never left RUNNING.

`driving(...)` wraps the part of `run`/`resume` after the parent run exists. A normal end
records the trials' Tune states and ends the parent FINISHED, FAILED (some trials failed) or
KILLED (interrupted); an exception ends it FAILED, Ctrl-C or SIGTERM KILLED, each with the
reason in the tag `headsweep.end_reason`. SIGTERM (a job stopped, `kill`) is turned into the
Ctrl-C Tune already handles, so Tune saves its state before the driver exits. While the driver
lives, the sweep's lock (`sweeps.lock`) beats and mirrors each beat into the parent run, so
`status` can tell a dead driver's sweep (*crashed*) from a running one.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import logging
import os
import signal
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType

from ray.tune import ExperimentAnalysis

from headsweep.data import DATASETS
from sweeps.locations import Locations, SweepError
from sweeps.lock import HEARTBEAT_TAG, INTERVAL_TAG, SweepLock
from sweeps.spec import SweepSpec
from sweeps.tracking import END_REASON, Tracker, end_run, is_local_store, ui_urls

log = logging.getLogger(__name__)

TERMINAL = ("TERMINATED", "ERROR")
LOCAL_UI = "http://127.0.0.1:5000"  # where `headsweep ui` serves a local store by default


@dataclass
class Outcome:
    name: str
    experiment_path: str
    parent_run_id: str
    counts: dict[str, int] = field(default_factory=dict)  # Tune status -> trials
    total: int = 0
    metric: str = ""  # what progress and the final table focus on
    experiment_id: str = ""

    @property
    def interrupted(self) -> bool:
        return sum(self.counts.get(s, 0) for s in TERMINAL) < self.total

    @property
    def failed(self) -> int:
        return self.counts.get("ERROR", 0)

    def urls(self, tracking_uri: str) -> tuple[str, str]:
        """The MLflow UI's runs table of the sweep's experiment and its parent run (for a
        local store, as `headsweep ui` serves it)."""
        base = tracking_uri if tracking_uri.startswith(("http://", "https://")) else LOCAL_UI
        return ui_urls(base, self.experiment_id, self.parent_run_id)


# --------------------------------------------------------------------------- before anything


def _nearest_existing(path: Path) -> Path:
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


def check_writable(loc: Locations) -> None:
    """Refuse, before Ray or MLflow write anything, a root, storage or SQLite store this
    process cannot write (URIs are probed by the sweep's lock, the first thing written)."""
    dirs = [("--root", loc.root)]
    if "://" not in loc.storage or loc.storage.startswith("file://"):
        dirs.append(("--storage", Path(loc.storage.removeprefix("file://")).expanduser()))
    for what, path in dirs:
        found = _nearest_existing(path.resolve())
        if not found.is_dir():
            raise SweepError(f"{what} {path}: {found} is a file, not a directory")
        if not os.access(found, os.W_OK):
            raise SweepError(f"{what} {path}: {found} is not writable")
    if is_local_store(loc.tracking_uri):
        db = Path(loc.tracking_uri.removeprefix("sqlite:///")).resolve()
        found = db if db.exists() else _nearest_existing(db.parent)
        if not os.access(found, os.W_OK):
            raise SweepError(f"tracking store {loc.tracking_uri}: {found} is not writable")


def check_data_roots(spec: SweepSpec) -> None:
    """Refuse, before anything starts, a sweep none of whose trials can find its data: a
    dataset read from torchvision's files (`data.download: false`) under a `data.root` that does
    not exist. A sweep some of whose trials can start runs (the others fail, recorded as such).
    The CLI makes relative roots absolute (sweeps.overrides.absolute_data_roots); a relative
    root left in a spec built by other code is left to the trial."""
    file_datasets = {n for n, f in DATASETS.items() if f.__module__.endswith("torchvision_formats")}
    missing: dict[str, str] = {}
    points = list(itertools.islice(spec.points(), 2000)) or [{}]
    for point in points:
        try:
            data = spec.settings(point).to_dict().get("data") or {}
        except (ValueError, KeyError):
            continue  # the spec validator has its own say
        root = Path(str(data.get("root", ""))).expanduser()
        needs_files = data.get("name") in file_datasets and not data.get("download")
        if needs_files and root.is_absolute() and not root.is_dir():
            missing[str(root)] = str(data["name"])
            continue
        return  # at least one trial can start
    if missing:
        where = "; ".join(f"{name} under {root}" for root, name in sorted(missing.items()))
        raise SweepError(
            f"data.root: no trial can find its data ({where}: no such directory); set "
            "data.download: true or point data.root at torchvision's files"
        )


def has_experiment(path: str) -> bool:
    """Whether Tune already wrote an experiment at a local path (beyond the sweep's lock)."""
    if "://" in path and not path.startswith("file://"):
        return False
    local = Path(path.removeprefix("file://"))
    return local.is_dir() and any(not p.name.startswith(".headsweep-") for p in local.iterdir())


# --------------------------------------------------------------------------- while it runs


def tune_statuses(experiment_path: str) -> dict[str, int]:
    counts: dict[str, int] = {}
    try:
        trials = ExperimentAnalysis(experiment_path).trials
    except Exception as exc:  # the path matters more to a user than Tune's traceback
        raise SweepError(f"cannot read the sweep's results at {experiment_path}: {exc}") from exc
    for trial in trials:
        counts[trial.status] = counts.get(trial.status, 0) + 1
    return counts


def _stop_children(tracker: Tracker, run_id: str) -> None:
    """Child runs of trials that never ended (interrupted, or the driver failed): KILLED, so
    nothing stays RUNNING; a resume sets them RUNNING again."""
    parent = tracker.client.get_run(run_id)
    for child in tracker.children(parent):
        if child.info.status == "RUNNING":
            tracker.client.set_terminated(child.info.run_id, "KILLED")


def finish(tracker: Tracker, outcome: Outcome, signalled: str = "") -> Outcome:
    """Record how the Tuner ended and end the parent run accordingly."""
    outcome.counts = tune_statuses(outcome.experiment_path)
    outcome.total = max(outcome.total, sum(outcome.counts.values()))
    state = "interrupted" if outcome.interrupted else "failed" if outcome.failed else "finished"
    client, run_id = tracker.client, outcome.parent_run_id
    client.set_tag(run_id, "headsweep.state", state)
    client.set_tag(run_id, "headsweep.counts", json.dumps(outcome.counts))
    status = {"finished": "FINISHED", "failed": "FAILED", "interrupted": "KILLED"}[state]
    reason = ""
    if state == "interrupted":
        unfinished = outcome.total - sum(outcome.counts.get(s, 0) for s in TERMINAL)
        reason = f"{signalled or 'interrupted'}: {unfinished} of {outcome.total} trials unfinished"
        _stop_children(tracker, run_id)
    elif state == "failed":
        reason = f"{outcome.failed} of {outcome.total} trials failed"
    end_run(client, run_id, status, reason)
    return outcome


def abort(tracker: Tracker, outcome: Outcome, status: str, reason: str) -> None:
    """End the parent run after the driver failed or was stopped; never raises (the original
    error is what the user must see)."""
    try:
        client, run_id = tracker.client, outcome.parent_run_id
        state = "failed" if status == "FAILED" else "interrupted"
        client.set_tag(run_id, "headsweep.state", state)
        with contextlib.suppress(Exception):  # the counts are a bonus
            client.set_tag(
                run_id, "headsweep.counts", json.dumps(tune_statuses(outcome.experiment_path))
            )
        with contextlib.suppress(Exception):
            _stop_children(tracker, run_id)
        end_run(client, run_id, status, reason)
    except Exception as exc:  # the tracking store itself is down: say so, keep the error
        log.error("could not end the parent run %s (%s): %s", outcome.parent_run_id, reason, exc)


def ended_by(exc: BaseException, signalled: str) -> tuple[str, str]:
    """(run status, reason) for what stopped the driver."""
    if isinstance(exc, KeyboardInterrupt | SystemExit):
        return "KILLED", signalled or "interrupted (Ctrl-C)"
    return "FAILED", f"driver failed: {type(exc).__name__}: {exc}"


@contextlib.contextmanager
def driving(tracker: Tracker, outcome: Outcome, lock: SweepLock) -> Iterator[None]:
    """Run the Tuner inside this block; the parent run ends however the block ends."""
    run_id, client = outcome.parent_run_id, tracker.client
    client.set_tag(run_id, INTERVAL_TAG, f"{lock.interval:g}")

    def on_beat(now: float) -> None:
        client.set_tag(run_id, HEARTBEAT_TAG, f"{now:.0f}")

    lock.on_beat = on_beat
    lock.beat()  # at once: a sweep is visible as alive from its first second
    signalled = {"by": ""}

    def on_sigterm(signum: int, frame: FrameType | None) -> None:
        signalled["by"] = "stopped by SIGTERM"
        handler = signal.getsignal(signal.SIGINT)
        if callable(handler) and handler is not signal.default_int_handler:
            handler(signal.SIGINT, frame)  # Tune's graceful stop: it saves its state first
        else:
            raise KeyboardInterrupt("SIGTERM")

    main = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGTERM, on_sigterm) if main else None
    try:
        try:
            yield
        except BaseException as exc:
            abort(tracker, outcome, *ended_by(exc, signalled["by"]))
            raise
        try:
            finish(tracker, outcome, signalled["by"])
        except BaseException as exc:
            abort(tracker, outcome, *ended_by(exc, signalled["by"]))
            raise
    finally:
        lock.on_beat = None
        if main:
            signal.signal(signal.SIGTERM, previous)


def reopen(tracker: Tracker, run_id: str) -> None:
    """A resumed sweep's parent run is RUNNING again, without the last end's reason."""
    tracker.client.update_run(run_id, status="RUNNING")
    tracker.client.set_tag(run_id, "headsweep.state", "running")
    with contextlib.suppress(Exception):  # no reason recorded: nothing to delete
        tracker.client.delete_tag(run_id, END_REASON)
