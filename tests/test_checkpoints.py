"""The checkpoint pruner deletes a superseded checkpoint only after a grace period, and only once
its successor is intact, so the one a (lagging) experiment snapshot names is never gone when a
killed sweep resumes; a resumed trial falls back to its newest intact checkpoint, or starts over
when none is."""

from types import SimpleNamespace

import torch
from pyarrow import fs
from ray import tune

from headsweep.optim import LARS
from sweeps import checkpoints
from sweeps.checkpoints import CheckpointPruner
from trainables import common
from trainables.manifest import write_manifest


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


# --------------------------------------------------------------------------- intact checkpoints


def _state(epoch: int, optimizer: torch.optim.Optimizer | None = None) -> dict:
    model = torch.nn.Linear(2, 2)
    optimizer = optimizer or torch.optim.Adam(model.parameters())
    return {
        "model": model.state_dict(),
        "optimizer": optimizer.state_dict(),
        "scheduler": {},
        "generator": torch.Generator().get_state(),
        "torch_rng": torch.get_rng_state(),
        "epoch": epoch,
        "history": [],
    }


def _checkpoint(trial_dir, k: int, state: dict) -> tune.Checkpoint:
    """A checkpoint as `trainables.common.report` writes it: state, then the manifest."""
    d = trial_dir / f"checkpoint_{k:06d}"
    d.mkdir(parents=True)
    torch.save(state, d / common.STATE_FILE)
    write_manifest(d)
    return tune.Checkpoint(str(d), filesystem=fs.LocalFileSystem())


def _restore(monkeypatch, checkpoint, check=None):
    monkeypatch.setattr(common.tune, "get_checkpoint", lambda: checkpoint)
    return common.restored_state(check)


def test_resume_falls_back_to_the_newest_intact_checkpoint(tmp_path, monkeypatch, caplog):
    for k in range(2):
        _checkpoint(tmp_path, k, _state(k + 1))
    newest = _checkpoint(tmp_path, 2, _state(3))
    state_file = tmp_path / "checkpoint_000002" / common.STATE_FILE
    state_file.write_bytes(state_file.read_bytes()[:100])  # cut short
    assert _restore(monkeypatch, newest)["epoch"] == 2
    assert "has 100 bytes" in caplog.text
    # same size, other bytes: the checksum catches it
    state_file.write_bytes(b"\0" * len(torch_bytes(_state(3))))
    assert _restore(monkeypatch, newest)["epoch"] == 2


def torch_bytes(state: dict) -> bytes:
    import io

    buffer = io.BytesIO()
    torch.save(state, buffer)
    return buffer.getvalue()


def test_no_intact_checkpoint_restarts_the_trial_with_a_warning(tmp_path, monkeypatch, caplog):
    only = _checkpoint(tmp_path, 0, _state(1))
    (tmp_path / "checkpoint_000000" / common.STATE_FILE).write_bytes(b"garbage")
    assert _restore(monkeypatch, only) is None
    assert "starts again from scratch" in caplog.text
    # a checkpoint Tune still names but storage lost, recreated empty by the driver
    missing = tune.Checkpoint(str(tmp_path / "checkpoint_000001"), filesystem=fs.LocalFileSystem())
    (tmp_path / "checkpoint_000001").mkdir()
    assert _restore(monkeypatch, missing) is None


def test_an_old_lars_state_falls_back_instead_of_a_keyerror(tmp_path, monkeypatch, caplog):
    params = [torch.nn.Parameter(torch.zeros(1))]
    lars = LARS(params, lr=0.1)
    old = lars.state_dict()
    for group in old["param_groups"]:  # as saved before eps/clip_lr/exclude_bias_n_norm existed
        for key in ("eps", "clip_lr", "exclude_bias_n_norm"):
            del group[key]
    _checkpoint(tmp_path, 0, {**_state(1), "optimizer": lars.state_dict()})
    newest = _checkpoint(tmp_path, 1, {**_state(2), "optimizer": old})
    state = _restore(monkeypatch, newest, common.optimizer_check(LARS(params, lr=0.1)))
    assert state["epoch"] == 1 and "lacks clip_lr, eps, exclude_bias_n_norm" in caplog.text


def test_a_superseded_checkpoint_stays_until_its_successor_is_intact(tmp_path, monkeypatch):
    clock = {"now": 0.0}
    monkeypatch.setattr(checkpoints.time, "monotonic", lambda: clock["now"])
    pruner = CheckpointPruner(grace_s=5)
    trial = SimpleNamespace(trial_id="t")
    first = _checkpoint(tmp_path, 0, _state(1))
    pruner.on_checkpoint(0, [], trial, first)
    clock["now"] = 1.0
    second = _checkpoint(tmp_path, 1, _state(2))
    (tmp_path / "checkpoint_000001" / common.STATE_FILE).write_bytes(b"cut")
    pruner.on_checkpoint(0, [], trial, second)
    clock["now"] = 100.0
    pruner.on_step_end(0, [])
    assert (tmp_path / "checkpoint_000000").exists()  # the successor is not intact
    # at the end of the sweep each trial keeps only its newest intact checkpoint
    third = _checkpoint(tmp_path, 2, _state(3))
    done = SimpleNamespace(trial_id="t", status="TERMINATED", checkpoint=third)
    pruner.on_experiment_end([done])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint_000002"]
