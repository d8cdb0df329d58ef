"""The CUDA paths (issue 12's GPU check): a bf16 autocast step, channels_last, a fractional-GPU
Tune trial. Tests marked `gpu` run with `pytest -m gpu` and skip, naming the reason, where CUDA
is absent; each has a CPU twin in the default suite that runs the same code on the CPU, as does
`python -m benchmarks.gpu --device cpu --quick` (`benchmarks/gpu_check.sh` runs the GPU side)."""

import importlib
import inspect
import json
import math
from pathlib import Path
from typing import Any

import pytest
import torch
from conftest import TINY_BASE, write_spec

from headsweep.config import TrialConfig
from headsweep.configtree import merge
from headsweep.train import _Trial

CUDA = torch.cuda.is_available()
NO_CUDA = "needs a CUDA device: torch.cuda.is_available() is False on this machine"
gpu = [pytest.mark.gpu, pytest.mark.skipif(not CUDA, reason=NO_CUDA)]
# Each path once per device: the CPU run is in the default suite, the CUDA run is `-m gpu`.
DEVICES = [pytest.param("cpu"), pytest.param("cuda", marks=gpu)]


@pytest.fixture(scope="module")
def bench():
    """benchmarks.gpu (benchmarks/ is a directory of the repository, not an installed package)."""
    return importlib.import_module("benchmarks.gpu")


def tiny_trial(bench, device: str) -> _Trial:
    """headsweep.train's own trial object on random images, [O]'s per-view forward, bf16."""
    cfg = TrialConfig.from_dict(
        merge(
            TINY_BASE,
            {
                "data": {"name": "cifar10"},
                "aug": {"recipe": "simclr_cifar"},
                "train": {"device": device, "precision": "bf16", "forward": "per_view"},
                "probe": {"online_n": 0},
            },
        )
    )
    return _Trial(cfg, bench.random_images(128, torch.device(device)), torch.device(device))


# --------------------------------------------------------------------------- bf16 autocast


@pytest.mark.parametrize("device", DEVICES)
def test_bf16_autocast_step_trains_in_bf16_and_keeps_fp32_weights(bench, device):
    trial = tiny_trial(bench, device)
    taps = trial.encode(trial.data.train.inputs[:8].float() / 255)
    assert taps["post"].dtype == torch.bfloat16  # the head's matmuls ran under autocast
    metrics = trial.train_epoch()
    assert math.isfinite(metrics["train/loss"]) and metrics["train/images_per_s"] > 0
    for p in trial.model.parameters():
        assert p.dtype == torch.float32 and p.device.type == device
        assert p.grad is None or p.grad.dtype == torch.float32


# --------------------------------------------------------------------------- channels_last


def conv_weights(model: torch.nn.Module) -> list[torch.Tensor]:
    return [m.weight for m in model.modules() if isinstance(m, torch.nn.Conv2d)]


@pytest.mark.parametrize("device", DEVICES)
def test_channels_last_model_gives_the_contiguous_models_outputs(bench, device):
    trial = bench.make_trial(tiny_trial(bench, device).cfg, torch.device(device), 64)
    assert trial.channels_last
    assert all(
        w.is_contiguous(memory_format=torch.channels_last) for w in conv_weights(trial.model)
    )
    x = torch.randn(16, 3, 32, 32, device=device)
    assert trial._input(x).is_contiguous(memory_format=torch.channels_last)
    plain = tiny_trial(bench, device).model
    plain.load_state_dict(trial.model.state_dict())
    plain = plain.to(memory_format=torch.contiguous_format).eval()
    trial.model.eval()
    with torch.no_grad():  # fp32: the layouts must agree to float rounding
        ours, theirs = trial.model(trial._input(x)), plain(x.contiguous())
    for tap in ours:
        torch.testing.assert_close(ours[tap], theirs[tap], rtol=1e-4, atol=1e-4)


@pytest.mark.gpu
@pytest.mark.skipif(not CUDA, reason=NO_CUDA)
def test_train_py_itself_uses_channels_last_on_cuda(bench):
    trial = tiny_trial(bench, "cuda")  # no forcing: headsweep.train's own choice for image data
    assert trial.channels_last
    assert all(
        w.is_contiguous(memory_format=torch.channels_last) for w in conv_weights(trial.model)
    )


# --------------------------------------------------------------------------- frozen evaluation


@pytest.mark.parametrize("device", DEVICES)
def test_a_trial_runs_every_frozen_evaluation_on_its_device(device):
    """Diagnostics, kNN, the few-shot curve and worst-group probes (headsweep.frozen_eval)
    on one real trial on spurious textures_v2 data, the features on `device`: every metric
    finite, every row present (their values are tested against references on the CPU)."""
    from headsweep.train import pretrain

    cfg = merge(
        TINY_BASE,
        {
            "data": {"name": "textures_v2", "n_train": 256, "n_test": 100, "spurious_rho": 0.9},
            "model": {"backbone": "grid_cnn", "widths": [8, 8, 16, 16]},
            "train": {"device": device, "epochs": 1},
            "probe": {"few_shot_curve": [1, 0], "few_shot_subsets": 1, "knn_k": 20, "steps": 10},
        },
    )
    result = pretrain(cfg)
    metrics = result.metrics
    for name in ("rank/pre", "uniform/post", "align/pre", "knn/digit/pre", "online_rank/post"):
        assert math.isfinite(metrics.get(name, math.nan)), name
    assert any(k.startswith("worst/digit/pre/") for k in metrics)
    assert 1 in {row["shots"] for row in result.few_shot}
    assert result.groups
    for row in result.groups:  # the worst group's accuracy is at most the average over groups
        assert 0 <= row["worst_group"] <= row["average"] + 1e-9 <= 1 + 1e-9, row
        assert row["n_groups"] >= 2, row
    assert result.device.startswith(device)


# --------------------------------------------------------------------------- fractional GPU


def fractional_spec(tmp_path: Path, gpu: float) -> str:
    """Two trials asking for `gpu` each, run at once: with 0.5 they share one GPU."""
    return write_spec(
        tmp_path / "fractional.yaml",
        name="fractional",
        space={"train.seed": {"grid": [0, 1]}},
        resources={"cpu": 1, "gpu": gpu},
        max_concurrent=2,
    )


def test_fractional_gpu_request_reaches_tune_and_is_checked_against_the_nodes(tmp_path):
    """The CPU side of the fractional-GPU trial: the spec's request is what Tune is handed, and
    the driver refuses it up front on a machine without a GPU."""
    from sweeps import tuner
    from sweeps.driver import check_fits
    from sweeps.overrides import SpecError
    from sweeps.spec import load_spec

    spec = load_spec(fractional_spec(tmp_path, 0.5))
    assert spec.resources.gpu == 0.5
    trainable: Any = tuner.trainable(spec)  # a function, or a class in some Ray versions
    classy = inspect.isclass(trainable)
    request = trainable.default_resource_request({}) if classy else trainable._resources
    assert request.required_resources == {"CPU": 1.0, "GPU": 0.5}
    check_fits(spec, [{"CPU": 16.0, "GPU": 1.0}])  # an H200 node: fits, twice
    with pytest.raises(SpecError, match=r"resources\.gpu: each trial asks for 0\.5 GPU"):
        check_fits(spec, [{"CPU": 2.0, "GPU": 0.0}])


@pytest.mark.gpu
@pytest.mark.ray
@pytest.mark.skipif(not CUDA, reason=NO_CUDA)
def test_fractional_gpu_tune_trials_share_the_gpu(request, tmp_path, capsys):
    for package in ("ray", "mlflow", "optuna"):  # a bare CUDA image may have torch alone
        pytest.importorskip(package, reason=f"the sweep stack needs {package}")
    request.getfixturevalue("ray_session")
    from sweeps import cli
    from sweeps.locations import Locations
    from sweeps.results import collect
    from trainables import TRAINABLES

    root = tmp_path / "runs"
    code = cli.main(["run", fractional_spec(tmp_path, 0.5), "--name", "frac", "--root", str(root)])
    out = capsys.readouterr().out
    assert code == 0, out
    trials = collect(Locations.make(root).experiment_path("frac"), TRAINABLES["contrastive"])
    assert len(trials) == 2
    for trial in trials:
        assert trial.record is not None, trial.error
        assert trial.record.device.startswith("cuda"), trial.record.device
        assert trial.record.resources["gpu"] == 0.5
        assert math.isfinite(trial.record.metrics["probe/digit/pre"])


# --------------------------------------------------------------------------- benchmarks/gpu.py


def test_quick_cpu_check_writes_json_with_every_section(bench, tmp_path, capsys):
    """`python -m benchmarks.gpu --device cpu --quick`, plus the compile path with the eager
    backend (dynamo traces the step; inductor's build is what only a GPU run pays for)."""
    out = tmp_path / "gpu.json"
    argv = ["--device", "cpu", "--quick", "--out", str(out), "--compile", "on"]
    code = bench.main([*argv, "--compile-backend", "eager"])
    result = json.loads(out.read_text())
    assert json.loads(capsys.readouterr().out) == result
    assert code == 0 and not bench.has_error(result), json.dumps(result, indent=1)
    assert set(bench.SECTIONS) <= set(result)
    assert result["device"]["type"] == "cpu" and result["matmul"]["tflops"] > 0
    assert {"simclr_cifar", "sas_digits"} <= set(result["views"])
    assert set(result["probes"]["taps"]) == {"pre", "post"} and result["probes"]["seconds"] > 0
    for section in ("step", "step_compiled"):
        step = result[section]["16"]
        assert step["flops_per_step"] > 0 and "channels_last True" in step["recipe"]
        assert "forward per_view" in step["recipe"] and "lars" in step["recipe"]
        for part in ("model", "fwd_bwd", "epoch"):
            assert step[part]["images_per_s"] > 0
            assert step[part]["pct_peak"] is None  # no peak for a CPU: not made up
            assert step[part]["pct_matmul"] > 0
    assert result["step_compiled"]["16"]["compile_backend"] == "eager"
    phases = {"data_s", "train_s", "probe_s", "total_s"}  # and parts of them (knn_s, ...)
    assert phases <= set(result["trial"]["timings"])
    assert result["trial"]["device"] == "cpu"


def test_a_failing_section_records_its_error_and_the_rest_still_run(bench, monkeypatch, capsys):
    def broken(*args):
        raise RuntimeError("CUDA out of memory (simulated)")

    monkeypatch.setitem(bench.SECTION_FNS, "views", broken)
    argv = ["--device", "cpu", "--quick", "--sections", "device,views,matmul"]
    assert bench.main(argv) == 1
    result = json.loads(capsys.readouterr().out)
    assert result["views"]["error"] == "RuntimeError: CUDA out of memory (simulated)"
    assert "error" not in result["matmul"] and "error" not in result["device"]
    assert "step_compiled" not in result


def test_compile_is_skipped_on_the_cpu_with_the_reason(bench, capsys):
    assert bench.main(["--device", "cpu", "--quick", "--sections", "step_compiled"]) == 0
    assert "inductor" in json.loads(capsys.readouterr().out)["step_compiled"]["skipped"]


@pytest.mark.skipif(CUDA, reason="checks the message for a machine without CUDA")
def test_cuda_requested_without_cuda_says_why(bench, capsys):
    assert bench.main(["--device", "cuda", "--quick", "--sections", "device,matmul"]) == 1
    result = json.loads(capsys.readouterr().out)
    assert "torch.cuda.is_available() is False" in result["matmul"]["error"]


def test_peak_table_matches_device_names_and_leaves_unknown_ones_out(bench):
    peaks = {
        "NVIDIA H200": 989.4,
        "NVIDIA H100 80GB HBM3": 989.4,
        "NVIDIA H100 PCIe": 756.0,
        "NVIDIA H100 NVL": None,
        "NVIDIA H200 NVL": None,
        "NVIDIA GH200 480GB": None,
        "NVIDIA A100-SXM4-80GB": 312.0,
        "NVIDIA A100 80GB PCIe": 312.0,
        "NVIDIA A10": 125.0,
        "NVIDIA A10G": None,
        "NVIDIA GeForce RTX 4090": None,
    }
    assert {name: bench.bf16_peak(name) for name in peaks} == peaks
