"""`--smoke` on every shipped spec: the dry run of every spec under each profile it declares,
and one real smoke trial of each spec whose default reads a torchvision dataset (the papers'
GPU-scale settings: ResNet-18, LARS, 10 warmup epochs, linear evaluation), run on the CPU from
files in torchvision's own formats. --smoke shrinks every epoch-valued field with the epochs
(the warmups, a linear evaluation that is on) and asks for 1 CPU and no GPU."""

import json
from pathlib import Path

import pandas as pd
import pytest
import yaml
from test_data_torchvision import write_cifar10, write_cifar100, write_mnist

from sweeps import cli
from sweeps.locations import Locations
from sweeps.spec import load_spec

SPECS = sorted((Path(__file__).resolve().parents[1] / "sweeps").glob("*.yaml"))
TORCHVISION_DATA = {"cifar10", "cifar100", "mnist_on_cifar10"}


def _raw(path: Path) -> dict:
    return yaml.safe_load(path.read_text())


CASES = [
    (path, profile) for path in SPECS for profile in [None, *(_raw(path).get("profiles") or {})]
]


@pytest.mark.parametrize(
    ("path", "profile"), CASES, ids=[f"{p.stem}-{prof or 'default'}" for p, prof in CASES]
)
def test_every_spec_and_profile_passes_the_smoke_dry_run(capsys, path, profile):
    args = ["run", str(path), "--smoke", "--dry-run"] + (["--profile", profile] if profile else [])
    code = cli.main(args)
    assert code == 0, capsys.readouterr().err


def test_smoke_shrinks_warmups_and_a_linear_evaluation_and_asks_for_one_cpu():
    spec = load_spec(SPECS[[p.stem for p in SPECS].index("ouyang_bottleneck")], smoke=True)
    assert spec.base["optim"]["warmup_epochs"] == 0
    linear = spec.base["probe"]["linear_eval"]
    assert (linear["epochs"], linear["warmup_epochs"]) == (1, 0)
    assert (spec.resources.cpu, spec.resources.gpu) == (1, 0)
    quick = load_spec(SPECS[[p.stem for p in SPECS].index("quickstart")], smoke=True)
    assert quick.base["probe"].get("linear_eval", {}).get("epochs", 0) == 0  # off stays off


GPU_DEFAULT = [
    p for p in SPECS if (_raw(p)["base"].get("data") or {}).get("name") in TORCHVISION_DATA
]


def _one_trial(path: Path) -> list[str]:
    """--set overrides that leave one trial: the first value of every grid axis (heads and
    variants included), one sample of a random or Optuna search."""
    spec = load_spec(path, smoke=True)
    args = []
    for axis in spec.space:
        if axis.kind == "grid":
            args += ["--set", f"space.{axis.key}=" + json.dumps({"grid": [axis.values[0]]})]
    return [*args, "--set", "search.num_samples=1"]


# ouyang_bottleneck in the default suite (30 s); the others (~35 s each) under -m slow.
GPU_CASES = [
    pytest.param(p, id=p.stem, marks=[] if p.stem == "ouyang_bottleneck" else [pytest.mark.slow])
    for p in GPU_DEFAULT
]


@pytest.mark.ray
@pytest.mark.parametrize("path", GPU_CASES)
def test_a_gpu_default_spec_runs_a_smoke_trial_on_the_cpu(ray_session, tmp_path, monkeypatch, path):
    data = tmp_path / "data"  # the specs' data.root, ./data
    write_cifar10(data, per_batch=60, n_test=150)
    write_cifar100(data, n_train=300, n_test=150)
    write_mnist(data, n_train=300, n_test=150)
    monkeypatch.chdir(tmp_path)
    root = tmp_path / "runs"
    args = ["run", str(path), "--smoke", *_one_trial(path), "--name", "s", "--root", str(root)]
    assert cli.main(args) == 0, args
    trials = pd.read_parquet(Locations.make(root).tables("s") / "trials.parquet")
    assert len(trials) == 1 and (trials["status"] == "finished").all(), trials["error"].tolist()
    probes = pd.read_parquet(Locations.make(root).tables("s") / "probes.parquet")
    assert {"pre", "post"} <= set(probes["tap"]), path.name
