"""Every shipped experiment spec runs at its smallest size through the real CLI and Ray Tune:
offline data (`cpu` profile where the default reads a real dataset), `--smoke` (tiny data, one
epoch), one value of each grid axis except the head / variant axes (so every head and variant of
every spec trains once), two Optuna trials. About 3 minutes on 2 cores."""

import json
from pathlib import Path

import pandas as pd
import pytest
import yaml

from sweeps import cli
from sweeps.locations import Locations
from sweeps.spec import load_spec

pytestmark = pytest.mark.ray
SPECS = sorted((Path(__file__).resolve().parents[1] / "sweeps").glob("*.yaml"))
KEEP_EVERY_VALUE = {"model.head", "variant"}


def smallest_args(path: Path) -> list[str]:
    raw = yaml.safe_load(path.read_text())
    profiles = ["cpu"] if "cpu" in (raw.get("profiles") or {}) else []
    spec = load_spec(path, smoke=True, profiles=profiles)
    args = [arg for name in profiles for arg in ("--profile", name)] + ["--smoke"]
    for axis in spec.space:
        if axis.kind == "grid" and axis.key not in KEEP_EVERY_VALUE:
            args += ["--set", f"space.{axis.key}=" + json.dumps({"grid": [axis.values[0]]})]
    if spec.search.algorithm == "optuna":
        args += ["--set", "search.num_samples=2"]
    return args


@pytest.mark.parametrize("path", SPECS, ids=[p.stem for p in SPECS])
def test_shipped_spec_runs_at_its_smallest_size(ray_session, tmp_path, path):
    root = tmp_path / "runs"
    args = ["run", str(path), *smallest_args(path), "--name", "s", "--root", str(root)]
    assert cli.main(args) == 0, args
    trials = pd.read_parquet(Locations.make(root).tables("s") / "trials.parquet")
    assert len(trials) >= 1 and (trials["status"] == "finished").all(), trials["error"].tolist()
    probes = pd.read_parquet(Locations.make(root).tables("s") / "probes.parquet")
    assert {"pre", "post"} <= set(probes["tap"]), path.name
