"""What `headsweep run --dry-run` prints: the trial list with resources, the resolved base config
and its recipe (every view's pipeline, forward mode, optimiser, precision, probes)."""

from __future__ import annotations

import json

import yaml

from headsweep.config import TrialConfig
from headsweep.configtree import flatten
from headsweep.view_describe import describe_view
from sweeps.spec import SweepSpec


def print_plan(spec: SweepSpec, name: str) -> None:
    res = spec.resources
    print(
        f"sweep {name}: {spec.num_trials()} trials of {spec.trainable}, search "
        f"{spec.search.algorithm}, scheduler {spec.scheduler.name}"
    )
    print(
        f"resources per trial: cpu={res.cpu:g} gpu={res.gpu:g}"
        + "".join(f" {k}={v:g}" for k, v in res.custom)
    )
    for axis in spec.space:
        print(f"  {axis.key}: {axis.describe()}")
    print_base(spec)
    print_recipe(spec)
    if spec.search.algorithm != "grid":
        print(f"{spec.search.num_samples} sampled trials (search.seed={spec.search.seed})")
        return
    for i, point in enumerate(spec.points()):
        flat = flatten({k: v for k, v in point.items()})
        text = " ".join(f"{k}={json.dumps(v)}" for k, v in flat.items())
        print(f"  {i:4d}  {text}")
    print("(dry run: nothing started)")


def print_base(spec: SweepSpec) -> None:
    """The base config as every trial starts from it, defaults and presets filled in and
    --set/--profile/--smoke applied: what the axes then vary."""
    resolved = spec.settings({}).to_dict()
    print("resolved base config (before the axes):")
    for line in yaml.safe_dump(
        resolved, sort_keys=False, width=96, default_flow_style=None
    ).splitlines():
        print(f"  {line}")


def print_recipe(spec: SweepSpec) -> None:
    """The resolved base config's recipe: views, forward, optimiser, precision, probes."""
    cfg = spec.settings({})
    if not isinstance(cfg, TrialConfig):
        return
    a, o, t, p = cfg.aug, cfg.optim, cfg.train, cfg.probe
    shape = "symmetric" if a.symmetric else "asymmetric"
    print(f"recipe (base config): aug.recipe={a.recipe} ({shape})")
    for i, view in enumerate(a.views, 1):
        print(f"  view{i}: {describe_view(view)}")
    print(f"  forward: {t.forward}   precision: {t.precision}   batch: {t.batch_size}")
    if o.name == "lars":
        extra = (
            f" eta={o.lars_eta:g} clip_lr={o.lars_clip_lr}"
            f" exclude_bias_n_norm={o.lars_exclude_bias_n_norm}"
        )
    else:
        extra = ""
    print(
        f"  optimiser: {o.name} lr={o.lr:g}{' x batch/256' if o.scale_lr_by_batch else ''} "
        f"wd={o.weight_decay:g}{extra} schedule={o.schedule} warmup={o.warmup_epochs:g} epochs"
    )
    probes = f"{p.protocol} (penalty {p.penalty:g})"
    if p.linear_eval.epochs:
        le = p.linear_eval
        probes += (
            f"; linear_eval ({le.optimizer} lr={le.lr:g}, {le.epochs} epochs, taps {list(le.taps)})"
        )
    print(f"  probes: {probes}")
