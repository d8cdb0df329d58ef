"""One driver per sweep (the lock and its heartbeat), the crashed-sweep check `status` uses, and
the one filter between a Tune result and MLflow metrics. No Ray runtime needed."""

import json
import os
import socket
import subprocess
import sys
import threading
import time

import pytest

from headsweep.configtree import POINT
from sweeps import lock as L
from sweeps.lock import LockHeld, SweepLock, driver_state, read_holder
from sweeps.tracking import store_init_lock
from sweeps.trial_logger import reportable, run_name, unlogged


def test_a_second_driver_is_refused_naming_the_first(tmp_path):
    path = str(tmp_path / "ray" / "sweep")
    with SweepLock(path, "sweep", "headsweep run a.yaml", interval=0.2).acquire(takeover=False):
        holder = read_holder(path)
        assert holder is not None and holder.pid == os.getpid()
        for takeover in (False, True):  # a live driver's lock is never taken, not even by resume
            with pytest.raises(LockHeld, match=rf"pid {os.getpid()} on .*headsweep run a.yaml"):
                SweepLock(path, "sweep", "headsweep resume sweep").acquire(takeover=takeover)
        first = holder.heartbeat
        time.sleep(0.5)
        assert read_holder(path).heartbeat > first  # the heartbeat moves
    assert not (tmp_path / "ray" / "sweep").exists()  # released, and nothing else was written


def test_a_dead_drivers_lock_is_taken_over_by_resume_only(tmp_path):
    path = tmp_path / "sweep"
    path.mkdir()
    dead = {
        "pid": 999999,
        "host": "gone",
        "command": "headsweep run",
        "started": time.time() - 100,
        "heartbeat": time.time() - 10,
        "interval": 1.0,
        "token": "old",
    }
    (path / L.LOCK_FILE).write_text(json.dumps(dead))
    with pytest.raises(LockHeld, match="headsweep resume sweep"):
        SweepLock(str(path), "sweep", "headsweep run").acquire(takeover=False)
    lock = SweepLock(str(path), "sweep", "headsweep resume", interval=5).acquire(takeover=True)
    try:
        assert read_holder(str(path)).token == lock.token
    finally:
        lock.release()


def test_the_first_look_refuses_a_live_driver_only(tmp_path):
    """refuse_if_driven (resume's check before Ray loads): a live holder is refused with the
    same message acquire gives; no lock, or a dead driver's, passes to acquire to decide."""
    path = str(tmp_path / "sweep")
    L.refuse_if_driven(path, "sweep")  # no lock: nothing to refuse
    with SweepLock(path, "sweep", "headsweep run a.yaml", interval=0.2).acquire(takeover=False):
        with pytest.raises(LockHeld) as first_look:
            L.refuse_if_driven(path, "sweep")
        with pytest.raises(LockHeld) as acquired:
            SweepLock(path, "sweep", "headsweep resume sweep").acquire(takeover=True)
    assert str(first_look.value).split(" (")[0] == str(acquired.value).split(" (")[0]
    assert f"pid {os.getpid()} on" in str(first_look.value)
    (tmp_path / "sweep").mkdir()
    dead = {"pid": 999999, "host": "gone", "command": "headsweep run", "started": 0.0}
    dead |= {"heartbeat": time.time() - 10, "interval": 1.0, "token": "old"}
    (tmp_path / "sweep" / L.LOCK_FILE).write_text(json.dumps(dead))
    L.refuse_if_driven(path, "sweep")  # a dead driver's lock: resume takes it over


def _lock_of(path, **fields) -> None:
    """A lock file as a driver on this host wrote it a second ago (30-s heartbeats)."""
    holder = {
        "pid": os.getpid(),
        "host": socket.gethostname(),
        "command": "headsweep run",
        "started": time.time() - 50,
        "heartbeat": time.time() - 1,
        "interval": 30.0,
        "token": "old",
        "process": L.process_identity(os.getpid()),
    }
    path.mkdir(parents=True, exist_ok=True)
    (path / L.LOCK_FILE).write_text(json.dumps({**holder, **fields}))


def test_a_dead_driver_on_this_host_is_known_at_once(tmp_path, capsys):
    """Its heartbeat is a second old (the heartbeat rule would wait 2 minutes), but its process
    is gone: stale now, `status` says crashed, resume takes over with one line saying so."""
    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True)  # fmt: skip
    pid = int(gone.stdout)
    path = tmp_path / "sweep"
    _lock_of(path, pid=pid, process=f"{L.process_identity(os.getpid()).split(':')[0]}:1")
    holder = read_holder(str(path))
    assert holder.gone() and holder.stale() and holder.age() < 5
    assert driver_state("RUNNING", {}, str(path)) == "crashed"
    L.refuse_if_driven(str(path), "sweep")  # passes to acquire, which takes over
    lock = SweepLock(str(path), "sweep", "headsweep resume", interval=5).acquire(takeover=True)
    lock.release()
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "its process is gone" in err[0] and f"pid {pid}" in err[0]


def test_a_reused_pid_is_not_the_driver(tmp_path):
    """The pid now names another process (this one): its start time differs from the lock's."""
    path = tmp_path / "sweep"
    boot = L.process_identity(os.getpid()).split(":")[0]
    _lock_of(path, process=f"{boot}:1")
    assert read_holder(str(path)).gone()
    _lock_of(path)  # the same process: alive
    assert not read_holder(str(path)).gone() and not read_holder(str(path)).stale()


def test_another_hosts_driver_is_judged_by_heartbeat_and_the_refusal_says_when(tmp_path):
    path = tmp_path / "sweep"
    _lock_of(path, pid=999999, host="elsewhere", process="")
    holder = read_holder(str(path))
    assert not holder.gone() and not holder.stale()
    with pytest.raises(LockHeld, match=r"counts as stale in 1[01]\d s"):
        SweepLock(str(path), "sweep", "headsweep resume").acquire(takeover=True)


def test_a_lock_written_before_process_identities_still_reads(tmp_path):
    path = tmp_path / "sweep"
    _lock_of(path, host="elsewhere")
    text = json.loads((path / L.LOCK_FILE).read_text())
    del text["process"]
    (path / L.LOCK_FILE).write_text(json.dumps(text))
    assert read_holder(str(path)).process == ""


def test_racing_drivers_get_exactly_one_lock(tmp_path):
    path = str(tmp_path / "sweep")
    won, refused = [], []
    barrier = threading.Barrier(8)

    def start() -> None:
        barrier.wait()
        try:
            won.append(SweepLock(path, "sweep", "run", interval=5).acquire(takeover=True))
        except LockHeld:
            refused.append(1)

    threads = [threading.Thread(target=start) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(won) == 1 and len(refused) == 7
    won[0].release()


def test_driver_state_tells_crashed_from_running(tmp_path):
    now = time.time()
    tags = {L.HEARTBEAT_TAG: f"{now - 2:.0f}", L.INTERVAL_TAG: "1"}
    assert driver_state("FINISHED", tags, now=now) == "finished"
    assert driver_state("RUNNING", tags, now=now) == "running"
    assert driver_state("RUNNING", tags, now=now + 10) == "crashed"  # 4 beats missed
    assert driver_state("RUNNING", {}, now=now) == "running"  # a sweep from before heartbeats
    # the lock file's fresher beat wins over a lagging tag (storage seen from this machine)
    with SweepLock(str(tmp_path), "s", "run", interval=1).acquire(takeover=False):
        assert driver_state("RUNNING", {**tags, L.HEARTBEAT_TAG: "0"}, str(tmp_path)) == "running"


def test_store_init_lock_serialises_processes(tmp_path):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    with store_init_lock(uri):
        assert (tmp_path / "mlflow.db.init-lock").exists()
    with store_init_lock("http://127.0.0.1:1"):  # servers migrate themselves: no lock
        pass


def test_only_new_metrics_reach_mlflow():
    result = {
        "train/loss": 1.5,
        "probe/digit/pre": 0.9,
        "config": {"aug": {"p_drop": 0.5}},
        "config/point/aug.p_drop": 0.5,
        "config.aug.p_drop": 0.5,
        "training_iteration": 3,
        "done": True,
        "node_id": "abc",
        "nan": float("nan"),
    }
    assert reportable(result) == {"train/loss": 1.5, "probe/digit/pre": 0.9}
    logged: dict = {}
    assert unlogged({"train/loss": 1.0, "online/digit/pre": 0.5}, 2, logged) == {
        "train/loss": 1.0,
        "online/digit/pre": 0.5,
    }
    # the final report at the last epoch's step repeats the online metrics: dropped
    assert unlogged({"online/digit/pre": 0.5, "probe/digit/pre": 0.8}, 2, logged) == {
        "probe/digit/pre": 0.8
    }
    assert unlogged({"online/digit/pre": 0.5}, 3, logged) == {"online/digit/pre": 0.5}


def test_child_runs_are_named_by_their_settings():
    config = {POINT: {"model.head": {"name": "mlp"}, "aug.p_drop": 0.5, "train.seed": 0}}
    axes = ("model.head", "aug.p_drop", "train.seed")
    assert run_name(config, axes) == "head=mlp p_drop=0.5 seed=0"
    variant = {POINT: {"optim": {"optim.name": "sgd", "optim.lr": 0.1}}}
    assert run_name(variant, ("optim",)) == "optim=name=sgd,lr=0.1"
    bundled = {POINT: {"variant": {"model.head": {"name": "none"}, "aug.p_drop": 0.0}}}
    assert run_name(bundled, ("variant",)) == "head=none p_drop=0"
