"""The `headsweep` command as a user runs it: a separate process, real exit codes."""

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import write_spec

HEADSWEEP = [sys.executable, "-m", "sweeps.cli"]
ENV = {**os.environ, "RAY_AUTH_MODE": "disabled"}


def headsweep(*args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run(
        [*HEADSWEEP, *args],
        capture_output=True,
        text=True,
        env=ENV,
        timeout=timeout,
        cwd=Path(__file__).resolve().parents[1],
    )


@pytest.mark.parametrize(
    ("fields", "key"),
    [
        ({"schedular": {"name": "asha"}}, "schedular"),  # unknown key
        ({"max_concurrent": "two"}, "max_concurrent"),  # wrong type
        ({"space": {"model.head.name": {"grid": ["mlp", "vit"]}}}, "model.head.name"),  # head
        ({"resources": {"cpu": 64}}, "resources.cpu"),  # can never fit this machine
    ],
)
def test_bad_spec_fails_fast_naming_the_key_and_writes_nothing(tmp_path, fields, key):
    spec = write_spec(tmp_path / "bad.yaml", **fields)
    root = tmp_path / "runs"
    start = time.monotonic()
    out = headsweep("run", spec, "--root", str(root))
    elapsed = time.monotonic() - start
    assert out.returncode == 2, out.stderr
    assert key in out.stderr
    assert len(out.stderr.strip().splitlines()) == 1  # one line, no traceback
    assert elapsed < 15
    assert not root.exists()  # no MLflow store, no Tune directory


def test_dry_run_lists_trials_with_resources_and_starts_nothing(tmp_path):
    spec = write_spec(
        tmp_path / "s.yaml",
        space={"aug.p_drop": {"grid": [0, 0.5, 1]}},
        resources={"cpu": 1, "gpu": 0},
    )
    root = tmp_path / "runs"
    out = headsweep("run", spec, "--dry-run", "--root", str(root))
    assert out.returncode == 0, out.stderr
    assert "3 trials" in out.stdout and "cpu=1" in out.stdout
    assert out.stdout.count("aug.p_drop=") == 3
    assert not root.exists()


def test_every_command_has_help():
    for command in (
        "run",
        "resume",
        "list",
        "status",
        "ui",
        "trial",
        "analyze",
        "compare",
        "validate",
    ):
        out = headsweep(command, "--help")
        assert out.returncode == 0 and "usage: headsweep" in out.stdout, command


def test_trial_runs_one_trial_in_process_without_ray(tmp_path):
    spec = write_spec(tmp_path / "s.yaml", space={"aug.p_drop": {"grid": [0.5, 1]}})
    out = headsweep("trial", spec, "--set", "train.epochs=1")
    assert out.returncode == 0, out.stderr
    assert "probe/digit/gap" in out.stdout and "epoch 1" in out.stdout
    assert "Started a local Ray instance" not in out.stdout + out.stderr


def test_status_of_an_unknown_sweep_is_a_one_line_error(tmp_path):
    out = headsweep("status", "nope", "--root", str(tmp_path))
    assert out.returncode == 2 and "no sweep named 'nope'" in out.stderr
