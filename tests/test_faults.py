"""Issue 29's battery: faults a sweep meets on real storage, each ending in a state `headsweep
status` describes. A full disk for real: the sweep's --storage on a small tmpfs (root mounts it
here; CI runs as root on the same kind of machine), filled mid-sweep. The trial that cannot
write fails with one line naming the path and `No space left on device`, nothing cut short is
taken for whole, and `resume` after space is freed finishes every trial exactly once. Where
this machine cannot mount (not root, no tmpfs) the same write path is tested with an injected
ENOSPC instead."""

import contextlib
import errno
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import write_spec
from test_orchestration import ENV, REPO, _results, cli_process, sweep_runs

from headsweep.atomic import write_text
from headsweep.record import TrialRecord

pytestmark = pytest.mark.ray
EPOCHS = 6


@contextlib.contextmanager
def small_filesystem(path: Path, megabytes: int):
    """A tmpfs of `megabytes` at `path` for the block, or None where mounting is refused."""
    path.mkdir(parents=True)
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={megabytes}m", "tmpfs", str(path)],
        capture_output=True,
    )
    try:
        yield path if mounted.returncode == 0 else None
    finally:
        if mounted.returncode == 0:
            subprocess.run(["umount", "-l", str(path)], capture_output=True)


def _fill(path: Path) -> Path:
    """Write until the filesystem is full; the filler file, to be removed to free the space."""
    filler = path / "filler.bin"
    with open(filler, "wb") as out:
        chunk = b"\0" * (1 << 16)
        with contextlib.suppress(OSError):
            while True:
                out.write(chunk)
                out.flush()
    return filler


def _checkpoints(experiment: Path) -> list[Path]:
    return sorted(experiment.glob("contrastive_*/checkpoint_*"))


def test_a_full_disk_fails_the_trial_cleanly_and_resume_finishes_the_sweep(tmp_path):
    with small_filesystem(tmp_path / "storage", 64) as storage:
        if storage is None:
            pytest.fail("mount refused: see test_enospc_at_a_write_leaves_no_partial_file")
        spec = write_spec(
            tmp_path / "full.yaml",
            name="full",
            max_concurrent=1,
            checkpoint_every=1,
            base={
                "data": {"name": "digits_on_texture", "n_train": 1024, "n_test": 128},
                "model": {"widths": [16, 32]},
                "train": {"epochs": EPOCHS, "batch_size": 64},
                "probe": {"steps": 20, "online_n": 0},
            },
            space={"aug.p_drop": {"grid": [0.0, 1.0]}},
        )
        root = tmp_path / "runs"
        args = ["run", spec, "--name", "full", "--root", str(root), "--storage", str(storage)]
        driver = subprocess.Popen(
            [sys.executable, "-m", "sweeps.cli", *args],
            env=ENV,
            cwd=REPO,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        experiment = storage / "full"
        deadline = time.monotonic() + 240
        while not _checkpoints(experiment):
            assert driver.poll() is None, driver.stdout.read()
            assert time.monotonic() < deadline, "no checkpoint within 240 s"
            time.sleep(0.2)
        filler = _fill(storage)
        out, _ = driver.communicate(timeout=600)
        assert driver.returncode != 0, out
        failed = [line for line in out.splitlines() if "FAILED" in line]
        assert failed and "No space left on device" in failed[0], out
        assert str(storage) in failed[0], failed[0]
        # Nothing cut short is taken for whole: every record that exists reads, no temp file of
        # ours is left behind.
        for record in experiment.glob("contrastive_*/checkpoint_*/record.json"):
            TrialRecord.from_json(record.read_text())
        assert not list(experiment.rglob(".*.tmp"))
        status = cli_process(["status", "full", "--root", str(root)])
        assert "failed" in status.stdout.lower(), status.stdout + status.stderr

        filler.unlink()
        done = cli_process(["resume", "full", "--root", str(root)])
        assert done.returncode == 0, done.stdout + done.stderr
        after = _results(experiment)
        assert len(after) == 2
        for rows in after.values():
            assert sum(1 for r in rows if r.get("done")) == 1  # finished exactly once
        _, _, children = sweep_runs(root, "full")
        assert {c.info.status for c in children} == {"FINISHED"}
        status = cli_process(["status", "full", "--root", str(root)])
        assert "finished" in status.stdout.lower(), status.stdout


def test_enospc_at_a_write_leaves_no_partial_file(tmp_path, monkeypatch):
    """The atomic write under ENOSPC (injected at the write itself): the error names the path
    and the reason, the old file stays whole, no temp file stays behind."""
    target = tmp_path / "record.json"
    write_text(target, json.dumps({"old": True}))

    def full(path: str) -> None:
        with open(path, "w") as out:
            out.write('{"new": tr')  # half a record, then the disk is full
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), path)

    from headsweep import atomic

    with pytest.raises(OSError, match="No space left on device"):
        atomic.write_with(target, full)
    assert json.loads(target.read_text()) == {"old": True}
    assert [p.name for p in tmp_path.iterdir()] == ["record.json"]
