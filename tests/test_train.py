import math

import pytest
import torch

from headsweep import TrialConfig, load_checkpoint, pretrain
from headsweep import metrics as M
from headsweep.data import load_dataset
from headsweep.train import _Trial

TINY = {
    "data": {"n_train": 256, "n_test": 128},
    "train": {"epochs": 2, "batch_size": 64},
    "model": {"widths": [8, 16], "head": {"hidden": 32, "out": 16}},
    "probe": {"steps": 50, "online_n": 64},
}


def tiny(**sections) -> dict:
    cfg = {k: dict(v) for k, v in TINY.items()}
    for section, values in sections.items():
        cfg.setdefault(section, {}).update(values)
    return cfg


def test_pretrain_returns_probes_for_every_tap_and_target_and_epoch_history():
    seen = []
    result = pretrain(tiny(), on_epoch=lambda epoch, metrics, state: seen.append(epoch))
    assert seen == [1, 2] and len(result.history) == 2
    taps = {row["tap"] for row in result.probes}
    assert taps == {"pre", "layer1", "post"}
    assert {row["target"] for row in result.probes} == {"object", "coarse", "digit"}
    for target in ("object", "digit"):
        gap = result.metrics[M.probe(target, "gap")]
        pre, post = result.metrics[M.probe(target, "pre")], result.metrics[M.probe(target, "post")]
        assert gap == pytest.approx(pre - post)
    for key in (M.LOSS, M.MI, M.MI_LOWER, M.MI_UPPER, M.THROUGHPUT, M.online("digit", "pre")):
        assert math.isfinite(result.history[-1][key]), key
    assert result.config["train"]["epochs"] == 2
    phases = {"data_s", "train_s", "probe_s", "total_s"}
    assert phases | {"diagnostics_s", "knn_s"} == set(result.timings)  # few-shot curve: off


def test_resumed_checkpoint_continues_exactly(tmp_path):
    path = tmp_path / "epoch1.pt"

    def save_first(epoch, metrics, state):
        if epoch == 1:
            state.save(path)

    full = pretrain(tiny(), on_epoch=save_first)
    resumed = pretrain(tiny(), resume=path)
    assert load_checkpoint(path)["epoch"] == 1
    assert resumed.history[0] == full.history[0]  # restored, not recomputed
    for key, value in full.history[1].items():
        if key not in (M.THROUGHPUT, M.EPOCH_TIME):
            assert resumed.history[1][key] == pytest.approx(value, rel=1e-6, abs=1e-7), key
    assert resumed.metrics[M.probe("digit", "pre")] == pytest.approx(
        full.metrics[M.probe("digit", "pre")], abs=1e-6
    )


def test_probing_changes_no_weight_and_no_bn_buffer():
    cfg = TrialConfig.from_dict(tiny())
    trial = _Trial(cfg, load_dataset(cfg.data), torch.device("cpu"))
    trial.train_epoch()
    before = {k: v.clone() for k, v in trial.model.state_dict().items()}
    trial.online_probe()
    trial.final_probes()
    after = trial.model.state_dict()
    assert trial.model.training  # mode restored
    assert any("running_mean" in k for k in before)
    for key, value in before.items():
        assert torch.equal(value, after[key]), key


def test_nan_loss_fails_with_a_clear_error():
    cfg = tiny(optim={"name": "sgd", "lr": 1e12, "momentum": 0.0}, loss={"name": "spectral"})
    with pytest.raises(FloatingPointError, match="loss became"):
        pretrain(cfg)


@pytest.mark.parametrize(
    "sections",
    [
        {"loss": {"name": "supcon", "target": "coarse"}},
        {"loss": {"name": "cross_entropy", "target": "coarse"}, "optim": {"name": "sgd"}},
        {"loss": {"name": "barlow"}, "optim": {"name": "lars", "lr": 0.3, "warmup_epochs": 1}},
        {"loss": {"mi_lambda": 0.5}, "model": {"head": {"name": "discrete", "levels": 4}}},
        {"model": {"head": {"name": "topk_sae", "latents_per_dim": 2, "k_per_dim": 0.125}}},
        {"optim": {"name": "adamw", "weight_decay": 0.05}},
        {"model": {"head": {"name": "fixed_reweight", "kappa": 1.2}}, "aug": {"p_drop": 0.5}},
    ],
)
def test_every_setup_runs(sections):
    result = pretrain(tiny(**sections))
    assert math.isfinite(result.metrics[M.LOSS])
    assert 0 <= result.metrics[M.probe("digit", "post")] <= 1


def test_vector_data_with_mlp_backbone():
    result = pretrain(
        tiny(
            data={"name": "synthetic", "n_train": 512, "n_test": 256},
            model={"backbone": "mlp", "widths": [32, 16]},
            aug={"feature_drop": [0, 0, 0, 0.5, 0.5]},
        )
    )
    assert {r["target"] for r in result.probes} == {f"feature{k}" for k in range(5)}


def test_mi_regulariser_lowers_i2():
    base = pretrain(tiny(train={"epochs": 3}))
    regularised = pretrain(tiny(train={"epochs": 3}, loss={"mi_lambda": 5.0}))
    assert regularised.metrics[M.MI] < base.metrics[M.MI]


def test_unknown_loss_target_names_the_key():
    with pytest.raises(ValueError, match="loss.target"):
        pretrain(tiny(loss={"name": "supcon", "target": "fine"}))


def test_small_cnn_learns_object_and_digit_on_digits_on_texture():
    """Acceptance (reduced): both probes on pre features reach 3x chance (10 classes)."""
    result = pretrain(
        {
            "data": {"n_train": 1536, "n_test": 512},
            "train": {"epochs": 6, "batch_size": 256},
            "probe": {"online_n": 0},
        }
    )
    assert result.metrics[M.probe("object", "pre")] >= 0.3
    assert result.metrics[M.probe("digit", "pre")] >= 0.3


@pytest.mark.slow
def test_full_size_digits_run_within_three_minutes():
    """Acceptance: 5,000 images, mlp head, p_drop 0, < 3 min on 2 CPU cores."""
    result = pretrain(
        {
            "data": {"n_train": 5000, "n_test": 1000},
            "train": {"epochs": 10},
            "model": {"head": {"preset": "sas"}},
        }
    )
    assert result.timings["total_s"] < 180
    assert result.metrics[M.probe("object", "pre")] >= 0.3
    assert result.metrics[M.probe("digit", "pre")] >= 0.3


def test_adamw_decay_is_decoupled_from_adams_step_normalisation():
    # With a zero gradient, Adam turns its coupled L2 term into a step of ~lr whatever the
    # weight (it is divided by its own second moment); AdamW shrinks w by (1 - lr * wd) a step.
    from headsweep.config import OptimConfig
    from headsweep.optim import build_optimizer

    def shrink(name: str) -> float:
        w = torch.nn.Parameter(torch.full((4,), 1e-3))
        opt = build_optimizer(OptimConfig(name=name, lr=0.1, weight_decay=0.5), [w], 256)
        for _ in range(10):
            opt.zero_grad()
            w.grad = torch.zeros_like(w)
            opt.step()
        return float(w.detach()[0]) / 1e-3

    assert shrink("adamw") == pytest.approx((1 - 0.1 * 0.5) ** 10, rel=1e-5)
    assert shrink("adam") < 0  # the normalised L2 step (~lr) overshoots a tiny weight


def test_per_view_forward_gives_each_view_its_own_batchnorm_statistics():
    cfg = TrialConfig.from_dict(tiny(train={"forward": "per_view"}))
    trial = _Trial(cfg, load_dataset(cfg.data), torch.device("cpu"))
    trial.model.train()
    torch.manual_seed(1)
    v1, v2 = torch.randn(16, 3, 32, 32), torch.randn(16, 3, 32, 32) * 2 + 1
    with torch.no_grad():
        stacked = trial.encode_views(v1, v2)
        one, two = trial.model(v1), trial.model(v2)
        joint = trial.model(torch.cat([v1, v2]))
    for tap in ("pre", "layer1", "post"):
        torch.testing.assert_close(stacked[tap], torch.cat([one[tap], two[tap]]))
    # a joint pass normalises both views with shared statistics: different outputs
    assert not torch.allclose(stacked["post"], joint["post"], atol=1e-3)
    joint_cfg = TrialConfig.from_dict(tiny(train={"forward": "joint"}))
    joint_trial = _Trial(joint_cfg, load_dataset(joint_cfg.data), torch.device("cpu"))
    joint_trial.model.load_state_dict(trial.model.state_dict())
    with torch.no_grad():
        torch.testing.assert_close(joint_trial.encode_views(v1, v2)["post"], joint["post"])


def test_lower_bound_proxy_uses_the_methods_own_loss():
    from headsweep.losses import LOSSES
    from headsweep.regularizers import bottleneck_metrics, matrix_mutual_information

    torch.manual_seed(0)
    h1, h2, z1, z2 = (torch.randn(32, 16) for _ in range(4))
    cfg = TrialConfig.from_dict({"loss": {"name": "barlow"}}).loss
    own = LOSSES["barlow"](h1, h2, None, cfg)
    out = bottleneck_metrics(h1, h2, z1, z2, own)
    i2 = matrix_mutual_information(torch.cat([h1, h2]), torch.cat([z1, z2]))
    torch.testing.assert_close(out["mi_lower"], -own - i2)
    result = pretrain(tiny(loss={"name": "barlow"}, train={"epochs": 1}))
    assert math.isfinite(result.history[-1][M.MI_LOWER])


def test_zero_epochs_probes_the_untrained_encoder_and_steps_are_recorded():
    cold = pretrain(tiny(train={"epochs": 0}))
    assert cold.history == [] and {r["tap"] for r in cold.probes} == {"pre", "layer1", "post"}
    warm = pretrain(tiny(train={"epochs": 1}))
    assert warm.history[-1][M.STEPS] == 256 // 64


def test_linear_eval_runs_on_augmented_frozen_features_and_is_reported_apart():
    result = pretrain(tiny(probe={"linear_eval": {"epochs": 1, "batch_size": 32}}))
    linear = [r for r in result.probes if r["protocol"].startswith("linear_eval(")]
    assert {(r["tap"], r["target"]) for r in linear} == {
        ("pre", t) for t in ("object", "coarse", "digit")
    }
    for row in linear:
        assert result.metrics[M.linear_eval(row["target"], "pre")] == row["accuracy"]
    frozen = next(r for r in result.probes if r["tap"] == "pre" and r["target"] == "digit")
    assert frozen["protocol"].startswith("sas(")
    assert result.metrics[M.probe("digit", "pre")] == frozen["accuracy"]


def test_channels_last_on_the_cpu_by_default_and_same_features_as_contiguous():
    """memory_format auto: channels_last for images on every device (it measured faster on
    the CPU too); the layout changes speed, never the features."""
    cfg = TrialConfig.from_dict(tiny(model={"backbone": "grid_cnn", "widths": [8, 8, 16, 16]}))
    flat = TrialConfig.from_dict(
        tiny(
            model={"backbone": "grid_cnn", "widths": [8, 8, 16, 16]},
            train={"memory_format": "contiguous"},
        )
    )
    data = load_dataset(cfg.data)
    fast, plain = _Trial(cfg, data, torch.device("cpu")), _Trial(flat, data, torch.device("cpu"))
    conv = next(m for m in fast.model.modules() if isinstance(m, torch.nn.Conv2d))
    assert conv.weight.is_contiguous(memory_format=torch.channels_last)
    assert fast.channels_last and not plain.channels_last
    plain.model.load_state_dict(fast.model.state_dict())
    x = torch.randn(8, 3, 32, 32)
    fast.model.eval(), plain.model.eval()
    with torch.no_grad():
        for tap, value in fast.encode(x).items():
            torch.testing.assert_close(value, plain.encode(x)[tap], atol=1e-5, rtol=1e-4)


def recorded_metric_steps(every: int, monkeypatch) -> tuple[_Trial, list[dict], list[dict]]:
    """Two epochs of a tiny vector-data trial (8 steps each) with train.metrics_every = every:
    the epoch metrics and, per call of bottleneck_metrics, the step of the epoch and its
    values. One thread: two spin on a loaded machine for a model this small."""
    import headsweep.train as train_module

    cfg = TrialConfig.from_dict(
        {
            "data": {"name": "synthetic", "n_train": 128, "n_test": 64},
            "model": {"backbone": "mlp", "widths": [32, 16], "head": {"hidden": 32, "out": 16}},
            "train": {"batch_size": 16, "metrics_every": every},
            "probe": {"online_n": 0},
        }
    )
    torch.manual_seed(0)
    trial = _Trial(cfg, load_dataset(cfg.data), torch.device("cpu"))
    calls: list[dict] = []
    original = train_module.bottleneck_metrics

    def record(*args):
        out = original(*args)
        done = trial.state.scheduler.last_epoch  # optimiser steps so far, this one included
        step = (done - 1) % trial.steps_per_epoch
        calls.append({"step": step, **{k: float(v) for k, v in out.items()}})
        return out

    monkeypatch.setattr(train_module, "bottleneck_metrics", record)
    epochs, threads = [], torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        for _ in range(2):
            epochs.append(trial.train_epoch())
            trial.state.epoch += 1
    finally:
        torch.set_num_threads(threads)
    return trial, epochs, calls


def epoch_means(calls: list[dict], epoch: int, steps_per_epoch: int, k: int) -> dict[str, float]:
    sampled = len(range(0, steps_per_epoch, k))
    rows = calls[epoch * sampled : (epoch + 1) * sampled]
    return {key: sum(r[key] for r in rows) / len(rows) for key in ("mi", "mi_lower", "mi_upper")}


def test_metrics_every_step_is_the_mean_over_all_steps(monkeypatch):
    trial, epochs, calls = recorded_metric_steps(1, monkeypatch)
    assert trial.steps_per_epoch == 8
    assert [c["step"] for c in calls] == list(range(8)) * 2
    for epoch, metrics in enumerate(epochs):
        want = epoch_means(calls, epoch, 8, 1)
        for key, name in ((M.MI, "mi"), (M.MI_LOWER, "mi_lower"), (M.MI_UPPER, "mi_upper")):
            assert metrics[key] == pytest.approx(want[name], rel=1e-6, abs=1e-6), key


def test_metrics_every_k_averages_steps_0_k_2k_and_changes_no_loss(monkeypatch):
    """k = 3 on 8 steps: the I₂ metrics are the mean over steps 0, 3, 6 of each epoch; the
    losses stay means over every step and training is the same as with k = 1."""
    _, every, _ = recorded_metric_steps(1, monkeypatch)
    _, epochs, calls = recorded_metric_steps(3, monkeypatch)
    assert [c["step"] for c in calls] == [0, 3, 6] * 2
    for epoch, metrics in enumerate(epochs):
        want = epoch_means(calls, epoch, 8, 3)
        for key, name in ((M.MI, "mi"), (M.MI_LOWER, "mi_lower"), (M.MI_UPPER, "mi_upper")):
            assert metrics[key] == pytest.approx(want[name], rel=1e-6, abs=1e-6), key
        for key in (M.LOSS, M.TOTAL_LOSS, M.STEPS):
            assert metrics[key] == every[epoch][key], key
