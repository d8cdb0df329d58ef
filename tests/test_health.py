"""Training health (headsweep.health, docs/science.md §11): every flag fires on a constructed
failure and stays quiet on a trial that trained; the pre-fix FSQ freeze is caught for real; a
trial that did not train is shown in the tables, never averaged, and a verdict it would have
entered is inconclusive, naming it."""

import itertools
import math
from pathlib import Path

import pandas as pd
import pytest
import torch
import torch.nn.functional as F
from test_analysis import META, finished

from analysis.report import analyze
from headsweep import health
from headsweep import metrics as M
from headsweep.backbones import build_backbone
from headsweep.config import ModelConfig
from headsweep.diagnostics import dead_channel_share, dead_filter_share
from sweeps.spec import load_spec
from trainables import TRAINABLES

SPEC = Path(__file__).resolve().parents[1] / "sweeps" / "ouyang_bottleneck.yaml"
HEALTHY = {
    M.HEALTH_LOSS_RATIO: 0.45,
    M.HEALTH_GRAD_MAX: 12.0,
    M.HEALTH_NONFINITE: 0.0,
    M.HEALTH_DEAD_CHANNELS: 0.1,
    M.HEALTH_DEAD_FILTERS: 0.0,
    M.rank("pre"): 40.0,
}


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        ({M.HEALTH_LOSS_RATIO: 0.99}, "did not learn"),
        ({M.HEALTH_NONFINITE: 3.0}, "3 non-finite"),
        ({M.HEALTH_GRAD_MAX: 1.3e11}, "exploding gradients"),
        ({M.HEALTH_DEAD_CHANNELS: 0.8}, "80% of encoder channels dead"),
        ({M.HEALTH_DEAD_FILTERS: 0.62}, "62% of an encoder layer's filters dead"),
        ({M.rank("pre"): 1.1}, "collapsed"),
    ],
)
def test_each_flag_fires_on_its_failure_and_only_then(change, reason):
    assert health.assess(HEALTHY) == health.OK
    assert reason in health.assess({**HEALTHY, **change})
    assert health.assess({M.LOSS: 1.0}) == health.UNMEASURED  # stored before health existed


def test_constant_head_losses():
    """What a head mapping every input to one vector scores, checked on the losses."""
    from headsweep.config import LossConfig
    from headsweep.losses import LOSSES

    z = torch.ones(32, 16)
    for name in ("nt_xent", "barlow"):
        cfg = LossConfig(name=name)
        got = float(LOSSES[name](z, z, None, cfg))
        assert got == pytest.approx(health.constant_loss(name, 32, 16, 1, cfg.scale), rel=1e-4)
    assert math.isnan(health.constant_loss("spectral", 32, 16, 1, 0.1))


def test_dead_channels_and_filters_are_measured():
    g = torch.Generator().manual_seed(0)
    features = torch.randn(200, 10, generator=g)
    assert dead_channel_share(features) == 0
    features[:, :6] = 0.5  # constant channels: no variance
    assert dead_channel_share(features) == pytest.approx(0.6)
    encoder = build_backbone(ModelConfig(backbone="grid_cnn", widths=(8, 16, 32, 32)), 3)
    assert dead_filter_share(encoder) == 0
    last = [m for m in encoder.modules() if isinstance(m, torch.nn.Conv2d)][-1]
    with torch.no_grad():
        last.weight[12:] *= 1e-3  # weight decay's shrunk tail filters (20 of 32)
    assert dead_filter_share(encoder) == pytest.approx(20 / 32)


def _discrete_l5_trial():
    spec = load_spec(SPEC, profiles=["cpu"])
    info = TRAINABLES["contrastive"]
    point = {
        "variant": {"model.head.name": "discrete", "model.head.levels": 5},
        "train.seed": 0,
        "probe.steps": 20,  # the probes are not what these tests measure
        "data.n_test": 200,
    }
    cfg = info.settings(spec.trial_config(point))
    return cfg, info.run_local(cfg, None)


def test_a_discrete_l5_cpu_trial_trains_and_is_healthy():
    """With headsweep.normalize the FSQ head trains under the cpu profile's Adam: seed 0, 88
    steps, loss 3.29 against a constant head's log(2N − 1) = 6.24 (17 s on 2 cores)."""
    cfg, record = _discrete_l5_trial()
    constant = math.log(2 * cfg.train.batch_size - 1)
    assert record.metrics[M.LOSS] < 0.75 * constant, (record.metrics[M.LOSS], constant)
    assert health.assess(record.metrics) == health.OK


def test_the_pre_fix_normalisation_is_flagged(monkeypatch):
    """F.normalize in NT-Xent, as before the fix: the trial froze at loss 5.97 (of 6.24), the
    mark of one step whose gradient norm was ~1e11; health names it."""
    import headsweep.losses

    monkeypatch.setattr(headsweep.losses, "unit_rows", lambda x: F.normalize(x, dim=1))
    _, record = _discrete_l5_trial()
    assert record.metrics[M.HEALTH_GRAD_MAX] > 1e9
    assert "exploding gradients" in health.assess(record.metrics)


def test_a_trial_that_did_not_train_is_shown_never_averaged(tmp_path):
    grid = itertools.product(("none", "mlp"), (0.0, 0.5, 1.0), (0, 1, 2))
    trials = [finished(i, *point) for i, point in enumerate(grid)]
    for t in trials:
        t.record.metrics.update(HEALTHY)
    sick = next(t for t in trials if t.config["model.head.name"] == "mlp")
    sick.record.metrics[M.HEALTH_GRAD_MAX] = 1.3e11
    summary = analyze(
        "s", trials, tmp_path, experiment="xue_digits", seed_key="train.seed", meta=META
    )
    table = pd.read_parquet(tmp_path / "trials.parquet").set_index("trial_id")["health"]
    assert table[sick.trial_id].startswith("exploding gradients")
    assert (table.drop(sick.trial_id) == health.OK).all()
    probes = pd.read_parquet(tmp_path / "probes.parquet")
    assert sick.trial_id in set(probes["trial_id"])  # shown
    gaps = pd.read_parquet(tmp_path / "gaps.parquet")
    row = gaps[(gaps["model.head.name"] == "mlp") & (gaps["aug.p_drop"] == 0.0)]
    assert set(row["n"]) == {2}  # not averaged
    t6 = next(v for v in summary.verdicts if v.name == "T6")
    assert t6.outcome == "inconclusive" and sick.trial_id in t6.reason, t6.line()
    assert f"17 of 18 trials trained; not averaged: {sick.trial_id}" in summary.verdict_text()


def _reweight_trial(optimizer: str):
    spec = load_spec(SPEC.with_name("xue_reweight.yaml"), profiles=["cpu"])
    info = TRAINABLES["contrastive"]
    point = {
        "variant": {"model.head": {"name": "fixed_reweight", "kappa": 1.05}},
        "train.seed": 0,
        "optim.name": optimizer,
        "probe.steps": 20,
        "data.n_test": 200,
    }
    return info.run_local(info.settings(spec.trial_config(point)), None)


@pytest.mark.parametrize("optimizer", ["adamw", "adam"])
def test_the_reweighted_tail_filters_keep_their_norm_under_the_profiles_optimiser(optimizer):
    """fixed_reweight's tail channels get gradients below Adam's coupled L2 term: under Adam
    (the profile before the fix) 57% of the last conv's filters fell under 1% of the largest
    in 88 steps, and health says so; under the profile's AdamW none does."""
    spec = load_spec(SPEC.with_name("xue_reweight.yaml"), profiles=["cpu"])
    assert spec.base["optim"]["name"] == "adamw"
    record = _reweight_trial(optimizer)
    dead = record.metrics[M.HEALTH_DEAD_FILTERS]
    if optimizer == "adamw":
        assert dead == 0 and health.assess(record.metrics) == health.OK
    else:
        assert dead > health.DEAD_FILTERS and "filters dead" in health.assess(record.metrics)
