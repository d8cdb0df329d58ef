"""LARS against an independent implementation of solo-learn's update (docs/science.md §8)."""

import math

import pytest
import torch
from torch import nn

from headsweep.config import OptimConfig
from headsweep.optim import LARS, OPTIMIZERS, build_optimizer

STEPS = 20


def reference_lars(params, grads, lrs, momentum, wd, eta, clip, exclude):
    """The §8 formula in float64, one parameter at a time, with Python-float norms.
    Returns the final parameters and, per step, whether the clip bound for each parameter."""
    params = [p.detach().double().clone() for p in params]
    bufs = [None] * len(params)
    clipped = []
    for step, lr in enumerate(lrs):
        row = []
        for i, p in enumerate(params):
            g = grads[step][i].double()
            p_norm, g_norm = math.sqrt(float((p * p).sum())), math.sqrt(float((g * g).sum()))
            bound = None
            if (p.dim() != 1 or not exclude) and p_norm != 0 and g_norm != 0:
                lars_lr = eta * p_norm / (g_norm + wd * p_norm + 1e-8)
                if clip:
                    bound = lars_lr / lr > 1
                    lars_lr = min(lars_lr / lr, 1.0)
                d = lars_lr * (g + wd * p)
            else:
                d = g
            bufs[i] = d.clone() if bufs[i] is None else momentum * bufs[i] + d
            params[i] = p - lr * bufs[i]
            row.append(bound)
        clipped.append(row)
    return params, clipped


def small_model() -> nn.Module:
    """Linear weight (2-D), Linear bias (1-D, non-zero), BatchNorm weight (1-D, ones),
    BatchNorm bias (1-D, zero at the start: the ||p|| = 0 branch) and a 0-D scalar (not 1-D,
    so never excluded). float64, so the comparison at 1e-6 measures the update rule, not
    float32 rounding."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(8, 6), nn.BatchNorm1d(6))
    model.register_parameter("scale", nn.Parameter(torch.tensor(1.5)))
    return model.double()


def fixed_grads(params, scale: float, seed: int = 1) -> list[list[torch.Tensor]]:
    g = torch.Generator().manual_seed(seed)
    return [
        [torch.randn(p.shape, generator=g, dtype=torch.float64) * scale for p in params]
        for _ in range(STEPS)
    ]


def run_lars(model, grads, lr, schedule, **kwargs):
    params = list(model.parameters())
    opt = LARS(params, lr=lr, **kwargs)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, schedule)
    lrs = []
    for step in range(STEPS):
        for p, g in zip(params, grads[step], strict=True):
            p.grad = g.clone()
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    return params, lrs


CONSTANT = lambda step: 1.0  # noqa: E731
DECAYING = lambda step: 0.5 * (1 + math.cos(math.pi * step / STEPS)) + 0.05  # noqa: E731

CASES = {
    # name: (lr, grad scale, clip, exclude, weight decay, schedule, the clip binds?)
    "clip_binds": (1e-3, 1.0, True, True, 0.0, CONSTANT, True),
    "clip_free": (1.0, 1.0, True, True, 0.0, CONSTANT, False),
    "no_clip": (0.1, 1.0, False, True, 0.0, CONSTANT, None),
    "include_1d": (0.5, 1.0, True, False, 0.0, CONSTANT, False),
    "include_1d_no_clip": (0.1, 1.0, False, False, 1e-4, CONSTANT, None),
    "decay_clip_binds": (1e-3, 1.0, True, True, 1e-2, CONSTANT, True),
    "decay_clip_free": (1.0, 1.0, True, True, 0.5, CONSTANT, False),
    "decay_include_1d": (1.0, 1.0, True, False, 0.5, CONSTANT, False),
    "scheduled_clip_free": (1.0, 1.0, True, True, 1e-4, DECAYING, False),
    "scheduled_clip_binds": (1e-3, 1.0, True, False, 1e-4, DECAYING, True),
    "scheduled_no_clip": (0.2, 0.1, False, False, 1e-2, DECAYING, None),
    # ||g|| ~ 1e-6: eps (1e-8) changes lars_lr by ~1%, far above the tolerance
    "tiny_grads": (0.1, 1e-7, False, True, 0.0, CONSTANT, None),
}


@pytest.mark.parametrize("momentum", [0.9, 0.0])
@pytest.mark.parametrize("case", list(CASES))
def test_lars_matches_the_reference_formula(case, momentum):
    lr, scale, clip, exclude, wd, schedule, binds = CASES[case]
    model = small_model()
    start = [p.detach().clone() for p in model.parameters()]
    grads = fixed_grads(start, scale)
    ours, lrs = run_lars(
        model,
        grads,
        lr,
        schedule,
        momentum=momentum,
        weight_decay=wd,
        eta=0.02,
        clip_lr=clip,
        exclude_bias_n_norm=exclude,
    )
    assert lrs == pytest.approx([lr * schedule(s) for s in range(STEPS)])
    if schedule is DECAYING:
        assert len(set(lrs)) == STEPS  # the lr really changes between steps
    ref, clipped = reference_lars(start, grads, lrs, momentum, wd, 0.02, clip, exclude)
    for p, r, p0 in zip(ours, ref, start, strict=True):
        assert not torch.equal(p.detach(), p0)  # every parameter moved
        torch.testing.assert_close(p.detach().double(), r, atol=1e-6, rtol=1e-6)
    # The case is what its name says: the clip binds (or not) for the Linear weight, every step.
    weight = next(i for i, p in enumerate(start) if p.dim() == 2)
    weight_bound = [row[weight] for row in clipped]
    assert weight_bound == [binds] * STEPS


def test_excluded_parameters_get_plain_sgd_without_decay():
    model = small_model()
    params = list(model.parameters())
    opt = LARS(params, lr=0.1, momentum=0.0, weight_decay=0.5, eta=0.02)
    before = [p.detach().clone() for p in params]
    for p in params:
        p.grad = torch.ones_like(p)
    opt.step()
    for p, b in zip(params, before, strict=True):
        if p.ndim == 1:
            torch.testing.assert_close(p.detach(), b - 0.1)
        else:
            assert not torch.allclose(p.detach(), b - 0.1)


def test_zero_norm_parameter_is_not_scaled():
    p = nn.Parameter(torch.zeros(3, 4, dtype=torch.float64))
    opt = LARS([p], lr=0.1, momentum=0.0, weight_decay=0.1, eta=0.02)
    p.grad = torch.full((3, 4), 2.0, dtype=torch.float64)
    opt.step()
    torch.testing.assert_close(p.detach(), torch.full((3, 4), -0.2, dtype=torch.float64))


def test_zero_gradient_skips_decay():
    """||g|| = 0: d = g, so weight decay does not act either (solo-learn's branch)."""
    p = nn.Parameter(torch.ones(3, 4, dtype=torch.float64))
    opt = LARS([p], lr=0.1, momentum=0.0, weight_decay=0.5, eta=0.02, clip_lr=False)
    p.grad = torch.zeros_like(p)
    opt.step()
    torch.testing.assert_close(p.detach(), torch.ones(3, 4, dtype=torch.float64))


def test_build_optimizer_wires_the_lars_fields():
    model = small_model()
    cfg = OptimConfig(
        name="lars",
        lr=0.3,
        momentum=0.8,
        weight_decay=1e-4,
        lars_eta=0.01,
        lars_clip_lr=False,
        lars_exclude_bias_n_norm=False,
        scale_lr_by_batch=True,
    )
    opt = build_optimizer(cfg, list(model.parameters()), batch_size=512)
    assert isinstance(opt, LARS)
    group = opt.param_groups[0]
    assert group["lr"] == pytest.approx(0.6)
    assert (group["momentum"], group["weight_decay"], group["eta"]) == (0.8, 1e-4, 0.01)
    assert (group["clip_lr"], group["exclude_bias_n_norm"]) == (False, False)
    default = build_optimizer(OptimConfig(name="lars"), list(model.parameters()), 256)
    assert (default.param_groups[0]["clip_lr"], default.param_groups[0]["exclude_bias_n_norm"]) == (
        True,
        True,
    )


def test_optimizer_registry_covers_every_name():
    model = small_model()
    expected = {
        "adam": torch.optim.Adam,
        "adamw": torch.optim.AdamW,
        "sgd": torch.optim.SGD,
        "lars": LARS,
    }
    assert set(OPTIMIZERS) == set(expected)
    for name, cls in expected.items():
        assert type(build_optimizer(OptimConfig(name=name), list(model.parameters()), 256)) is cls
    with pytest.raises(ValueError, match="optim.name"):
        build_optimizer(OptimConfig(name="rmsprop"), list(model.parameters()), 256)
