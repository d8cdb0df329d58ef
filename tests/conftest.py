"""Shared test setup: two torch threads (the machine's cores), Ray without auth in tests."""

import os

import pytest
import torch

os.environ.setdefault("RAY_AUTH_MODE", "disabled")
torch.set_num_threads(2)


@pytest.fixture
def generator() -> torch.Generator:
    return torch.Generator().manual_seed(0)


@pytest.fixture(scope="session")
def ray_session():
    """One real Ray runtime for the in-process sweep tests (2 CPUs, like the machine)."""
    import ray

    ray.init(
        num_cpus=2, include_dashboard=False, object_store_memory=100 * 1024**2, log_to_driver=False
    )
    yield ray
    ray.shutdown()


TINY_BASE = {
    "data": {"name": "digits_on_texture", "n_train": 256, "n_test": 128},
    "model": {"widths": [8, 16], "head": {"name": "mlp", "hidden": 32, "out": 16}},
    "train": {"epochs": 2, "batch_size": 64},
    "probe": {"steps": 30, "online_n": 64},
}


def write_spec(path, **fields) -> str:
    """A small contrastive sweep spec as YAML; `fields` replace top-level keys."""
    import yaml

    spec = {
        "name": "tiny",
        "trainable": "contrastive",
        "base": TINY_BASE,
        "search": {"metric": "probe/digit/pre"},
        "resources": {"cpu": 1},
        "max_concurrent": 2,
        **fields,
    }
    path.write_text(yaml.safe_dump(spec))
    return str(path)


@pytest.fixture(autouse=True)
def _quick_mlflow_client_stays_in_its_test(monkeypatch):
    """`headsweep` commands other than run/resume bound MLflow's HTTP retries through the
    environment (sweeps.locations.QUICK_CLIENT); in-process CLI calls must not leak that into
    later tests."""
    from sweeps.locations import QUICK_CLIENT

    for key in QUICK_CLIENT:
        had = os.environ.get(key)
        monkeypatch.setenv(key, "")  # records the original value (or its absence) for undo
        if had is None:
            monkeypatch.delenv(key)
        else:
            monkeypatch.setenv(key, had)
