"""The checkpoint pruner deletes a superseded checkpoint only after a grace period, so the one a
(lagging) experiment snapshot names is never gone when a killed sweep resumes."""

from types import SimpleNamespace

from ray import tune

from sweeps import checkpoints
from sweeps.checkpoints import CheckpointPruner


def test_superseded_checkpoints_go_only_after_the_grace_period(tmp_path, monkeypatch):
    clock = {"now": 0.0}
    monkeypatch.setattr(checkpoints.time, "monotonic", lambda: clock["now"])
    pruner = CheckpointPruner(grace_s=15)
    trial = SimpleNamespace(trial_id="t1")
    dirs = []
    for k, at in enumerate([0.0, 10.0, 20.0]):
        d = tmp_path / f"checkpoint_{k:06d}"
        d.mkdir()
        (d / "state.pt").write_bytes(b"x")
        dirs.append(d)
        clock["now"] = at
        pruner.on_checkpoint(0, [], trial, tune.Checkpoint.from_directory(str(d)))
    assert all(d.exists() for d in dirs)  # at t=20 the newest settled one is still the first
    clock["now"] = 30.0
    pruner.on_step_end(0, [])
    assert [d.exists() for d in dirs] == [False, True, True]
    clock["now"] = 100.0
    pruner.on_step_end(0, [])
    assert [d.exists() for d in dirs] == [False, False, True]  # the newest always stays


def test_pruner_pickles_without_its_history(tmp_path):
    import pickle

    pruner = CheckpointPruner(grace_s=5)
    d = tmp_path / "c"
    d.mkdir()
    pruner.on_checkpoint(
        0, [], SimpleNamespace(trial_id="t"), tune.Checkpoint.from_directory(str(d))
    )
    copy = pickle.loads(pickle.dumps(pruner))
    assert copy.grace_s == 5 and copy._seen == {}


def test_checkpoints_left_by_a_killed_driver_are_adopted_and_pruned(tmp_path, monkeypatch):
    clock = {"now": 0.0}
    monkeypatch.setattr(checkpoints.time, "monotonic", lambda: clock["now"])
    for k in range(4):
        (tmp_path / f"checkpoint_{k:06d}").mkdir()
    (tmp_path / "result.json").write_text("{}")
    pruner = CheckpointPruner(grace_s=15)  # a resumed sweep's new pruner: no history
    latest = tune.Checkpoint.from_directory(str(tmp_path / "checkpoint_000003"))
    pruner.on_checkpoint(0, [], SimpleNamespace(trial_id="t"), latest)
    assert len(list(tmp_path.glob("checkpoint_*"))) == 4  # not before the grace period
    clock["now"] = 20.0
    pruner.on_step_end(0, [])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint_000003", "result.json"]
