"""Sweep specs: one YAML file per experiment, validated completely before anything starts.

    name: quickstart                     # experiment name in MLflow
    description: ...
    trainable: contrastive               # key of trainables.TRAINABLES
    base: {data: {...}, model: {...}}    # the nested trial config
    space:                               # dotted key -> one distribution
      model.head: {grid: [{name: none}, {name: mlp, preset: sas}]}   # a mapping merges
      aug.p_drop: {grid: [0, 0.5, 1]}
      train.seed: {grid: [0, 1, 2]}      # seeds are an axis like any other
      optim.lr: {loguniform: [1.0e-4, 1.0e-2]}
    search: {algorithm: grid | random | optuna, sampler: tpe | gp, seed, num_samples,
             metric, mode}
    scheduler: {name: none | asha, metric, mode, grace_period, reduction_factor}
    resources: {cpu: 1, gpu: 0.25, custom: {...}}   # per trial; fractions allowed
    max_concurrent: 2                    # 0 = as many as fit
    max_failures: 1                      # retries per trial
    checkpoint_every: 1                  # epochs
    smoke: {...}                         # extra dotted overrides for --smoke
    profiles:                            # named override sets, chosen with --profile NAME
      cpu: {data.name: digits_on_texture, train.epochs: 10, space.aug.p_drop: {grid: [0, 1]}}

A `variant` axis bundles changes across sections: each value is a mapping of dotted keys, e.g.
    variant: {grid: [{loss.name: nt_xent, model.head.preset: simclr},
                     {loss.name: barlow, model.head.preset: barlow, optim.lr: 0.3}]}
Every axis value, a mapping, a variant or a plain value, reaches the trial config through one
mechanism, `headsweep.configtree.apply_point`. The override language (--set, profiles, --smoke)
is in `sweeps.overrides`.

Every error is a `SpecError` naming the key and, where there is a list, the allowed values.
"""

from __future__ import annotations

import hashlib
import itertools
import json
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from headsweep import metrics as M
from headsweep.configtree import VARIANT, apply_point, build
from sweeps.metric_check import metric_problem
from sweeps.names import check_name
from sweeps.overrides import (
    TOP_KEYS,
    SpecError,
    absolute_data_roots,
    apply_profiles,
    apply_smoke,
    override,
    smoke_resources,
)
from sweeps.specfile import read_spec_file
from trainables import TRAINABLES, Trainable, TrialSettings

KINDS = ("grid", "choice", "uniform", "loguniform", "randint")


@dataclass(frozen=True)
class Axis:
    key: str  # dotted config key
    kind: str  # one of KINDS
    values: tuple[Any, ...] = ()  # grid / choice
    low: float = 0.0  # uniform / loguniform / randint (randint: high exclusive)
    high: float = 0.0

    def describe(self) -> str:
        if self.kind in ("grid", "choice"):
            return f"{self.kind}{list(self.values)}"
        return f"{self.kind}({self.low:g}, {self.high:g})"


@dataclass(frozen=True)
class Search:
    algorithm: str = "grid"
    sampler: str = "tpe"
    seed: int = 0
    num_samples: int = 1  # grid: repeats of the whole grid; random/optuna: trials
    metric: str = ""
    mode: str = "max"


@dataclass(frozen=True)
class Scheduler:
    name: str = "none"
    metric: str = ""
    mode: str = "max"
    grace_period: int = 1
    reduction_factor: int = 2


@dataclass(frozen=True)
class Resources:
    cpu: float = 1.0
    gpu: float = 0.0
    custom: tuple[tuple[str, float], ...] = ()  # e.g. accelerator or node-type resources

    def as_tune(self) -> dict[str, float]:
        return {"cpu": self.cpu, "gpu": self.gpu, **dict(self.custom)}


@dataclass(frozen=True)
class SweepSpec:
    name: str
    trainable: str
    base: dict[str, Any]
    space: tuple[Axis, ...] = ()
    description: str = ""
    search: Search = field(default_factory=Search)
    scheduler: Scheduler = field(default_factory=Scheduler)
    resources: Resources = field(default_factory=Resources)
    max_concurrent: int = 0
    max_failures: int = 0
    checkpoint_every: int = 1
    smoke: dict[str, Any] = field(default_factory=dict)
    source: dict[str, Any] = field(default_factory=dict)  # the YAML as loaded, for the record
    notes: tuple[str, ...] = ()  # what the CLI tells the user it did (e.g. --set over --smoke)

    @property
    def info(self) -> Trainable:
        return TRAINABLES[self.trainable]

    @property
    def grid(self) -> list[Axis]:
        return [a for a in self.space if a.kind == "grid"]

    def num_trials(self) -> int:
        if self.search.algorithm == "grid":
            size = 1
            for axis in self.grid:
                size *= len(axis.values)
            return size * self.search.num_samples
        return self.search.num_samples

    def digest(self) -> str:
        """Short hash of the resolved spec: identifies what a sweep ran."""
        text = json.dumps(self.source, sort_keys=True, default=str)
        return hashlib.sha256(text.encode()).hexdigest()[:12]

    def trial_config(self, point: Mapping[str, Any]) -> dict[str, Any]:
        """The nested trial config at one point of the space (dotted key -> value)."""
        return apply_point(self.base, point)

    def settings(self, point: Mapping[str, Any]) -> TrialSettings:
        """The validated config at one point."""
        settings: TrialSettings = self.info.parse(self.trial_config(point))
        return settings

    def default_metric(self) -> str:
        """The metric progress and the final table focus on: the search's, else the
        trainable's default for the base config."""
        return self.search.metric or self.info.default_metric(self.settings({}))

    def points(self) -> Iterator[dict[str, Any]]:
        """Grid points in Tune's order (distribution axes shown, not sampled)."""
        grid = self.grid
        for _ in range(self.search.num_samples if self.search.algorithm == "grid" else 1):
            for combo in itertools.product(*(a.values for a in reversed(grid))):
                yield {a.key: v for a, v in zip(reversed(grid), combo, strict=False)}


# --------------------------------------------------------------------------- loading


def load_spec(
    path: str | Path,
    overrides: Mapping[str, Any] | None = None,
    smoke: bool = False,
    profiles: Iterable[str] = (),
) -> SweepSpec:
    """Read, override and validate a spec file. Overrides whose first part is a spec key
    (search.num_samples, resources.cpu, max_failures, ...) change the spec; all others pin a
    trial-config key in `base` (and remove it from the space if it was swept)."""
    return parse_spec(read_spec_file(path), overrides or {}, smoke, profiles)


def parse_spec(
    raw: Mapping[str, Any],
    overrides: Mapping[str, Any] | None = None,
    smoke: bool = False,
    profiles: Iterable[str] = (),
    cwd: Path | None = None,
) -> SweepSpec:
    """`cwd`: where relative `data.root` values point (the CLI passes its working directory;
    the stored spec then holds absolute roots, so a resume finds the same data)."""
    raw = json.loads(json.dumps(raw, default=str))
    unknown = sorted(set(raw) - set(TOP_KEYS))
    if unknown:
        raise SpecError(f"unknown spec key '{unknown[0]}' (allowed: {', '.join(TOP_KEYS)})")
    raw = apply_profiles(raw, list(profiles))
    raw = override(raw, overrides or {}, explicit=True)
    raw.pop("profiles", None)  # applied: the stored spec is what ran
    raw, rooted = absolute_data_roots(raw, cwd) if cwd is not None else (raw, [])
    trainable = _require(raw, "trainable", str)
    if trainable not in TRAINABLES:
        raise SpecError(
            f"trainable: unknown value {trainable!r} (allowed: {', '.join(TRAINABLES)})"
        )
    info = TRAINABLES[trainable]
    base = raw.get("base") or {}
    if not isinstance(base, dict):
        raise SpecError("base: expected a mapping (the nested trial config)")
    smoke_overrides = raw.get("smoke") or {}
    if not isinstance(smoke_overrides, dict):
        raise SpecError("smoke: expected a mapping of dotted keys to values")
    space_raw = raw.get("space") or {}
    if not isinstance(space_raw, dict):
        raise SpecError("space: expected a mapping of dotted keys to distributions")
    notes: list[str] = list(rooted)
    if smoke:  # pinned over the spec (axes and variants cannot undo it), not over --set
        pins = {**info.smoke(base), **smoke_overrides}
        base, space_raw = apply_smoke(base, space_raw, pins, overrides or {}, notes)
        raw["resources"] = smoke_resources(raw.get("resources"), overrides or {}, notes)
    name = check_name(_require(raw, "name", str), "name")
    spec = SweepSpec(
        name=name,
        trainable=trainable,
        base=base,
        space=tuple(_axis(k, v) for k, v in space_raw.items()),
        description=str(raw.get("description") or ""),
        search=_section(Search, raw, "search"),
        scheduler=_section(Scheduler, raw, "scheduler"),
        resources=_resources(raw.get("resources") or {}),
        max_concurrent=_count(raw, "max_concurrent", 0),
        max_failures=_count(raw, "max_failures", 0),
        checkpoint_every=_count(raw, "checkpoint_every", 1),
        smoke=smoke_overrides,
        source={**raw, "base": base},
        notes=tuple(notes),
    )
    _validate(spec)
    return spec


def _require(raw: Mapping[str, Any], key: str, kind: type) -> Any:
    if key not in raw:
        raise SpecError(f"{key}: required")
    if not isinstance(raw[key], kind):
        raise SpecError(f"{key}: expected a {kind.__name__}, got {raw[key]!r}")
    return raw[key]


def _count(raw: Mapping[str, Any], key: str, default: int) -> int:
    value = raw.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise SpecError(f"{key}: expected a non-negative integer, got {value!r}")
    return value


def _section(cls: type, raw: Mapping[str, Any], key: str) -> Any:
    try:
        return build(cls, raw.get(key) or {}, key + ".")
    except ValueError as exc:
        raise SpecError(str(exc).replace("config key", "spec key")) from None


def _resources(raw: Any) -> Resources:
    if not isinstance(raw, dict):
        raise SpecError("resources: expected a mapping like {cpu: 1, gpu: 0.5}")
    custom = raw.get("custom") or {}
    if not isinstance(custom, dict):
        raise SpecError("resources.custom: expected a mapping of resource name to amount")
    res = _section(
        Resources, {"resources": {k: v for k, v in raw.items() if k != "custom"}}, "resources"
    )
    for key, amount in custom.items():
        if isinstance(amount, bool) or not isinstance(amount, int | float) or amount <= 0:
            raise SpecError(f"resources.custom.{key}: expected a positive number, got {amount!r}")
    if res.cpu <= 0:
        raise SpecError(f"resources.cpu: must be > 0, got {res.cpu}")
    if res.gpu < 0 or (res.gpu > 1 and res.gpu != int(res.gpu)):
        raise SpecError(
            f"resources.gpu: must be a fraction in [0, 1] or a whole number, got {res.gpu}"
        )
    return Resources(res.cpu, res.gpu, tuple(sorted((k, float(v)) for k, v in custom.items())))


def _axis(key: str, raw: Any) -> Axis:
    where = f"space.{key}"
    if not isinstance(raw, dict) or len(raw) != 1:
        raise SpecError(
            f"{where}: expected exactly one of {', '.join(KINDS)}, e.g. {{grid: [0, 0.5, 1]}}"
        )
    kind, arg = next(iter(raw.items()))
    if kind not in KINDS:
        raise SpecError(f"{where}: unknown distribution {kind!r} (allowed: {', '.join(KINDS)})")
    if kind in ("grid", "choice"):
        if not isinstance(arg, list) or not arg:
            raise SpecError(f"{where}.{kind}: expected a non-empty list of values")
        if key == VARIANT and not all(isinstance(v, dict) and v for v in arg):
            raise SpecError(
                f"{where}.{kind}: each variant is a mapping of dotted keys to "
                "values, e.g. {loss.name: barlow, optim.lr: 0.3}"
            )
        return Axis(key, kind, tuple(arg))
    if key == VARIANT:
        raise SpecError(f"{where}: a variant axis is a grid or a choice")
    if (
        not isinstance(arg, list)
        or len(arg) != 2
        or not all(isinstance(v, int | float) and not isinstance(v, bool) for v in arg)
    ):
        raise SpecError(f"{where}.{kind}: expected [low, high]")
    low, high = arg
    if not low < high:
        raise SpecError(f"{where}.{kind}: low must be < high, got [{low}, {high}]")
    if kind == "loguniform" and low <= 0:
        raise SpecError(f"{where}.loguniform: low must be > 0, got {low}")
    if kind == "randint" and not (float(low).is_integer() and float(high).is_integer()):
        raise SpecError(f"{where}.randint: bounds must be integers, got [{low}, {high}]")
    return Axis(key, kind, low=low, high=high)


# --------------------------------------------------------------------------- checks


def config_warnings(spec: SweepSpec) -> list[str]:
    """Distinct warnings of the base config and every grid point (see TrialConfig.warnings)."""
    found: dict[str, None] = {}
    for point in itertools.islice(itertools.chain([{}], spec.points()), 2000):
        for text in spec.settings(point).warnings():
            found[text] = None
    return list(found)


def _check_config(spec: SweepSpec, point: Mapping[str, Any], origin: str) -> TrialSettings:
    try:
        return spec.settings(point)
    except ValueError as exc:
        raise SpecError(f"{origin}: {exc}") from None


def _validate(spec: SweepSpec) -> None:
    s, sched = spec.search, spec.scheduler
    if s.algorithm not in ("grid", "random", "optuna"):
        raise SpecError(
            f"search.algorithm: unknown value {s.algorithm!r} (allowed: grid, random, optuna)"
        )
    if s.sampler not in ("tpe", "gp"):
        raise SpecError(f"search.sampler: unknown value {s.sampler!r} (allowed: tpe, gp)")
    for key, mode in (("search.mode", s.mode), ("scheduler.mode", sched.mode)):
        if mode not in ("max", "min"):
            raise SpecError(f"{key}: unknown value {mode!r} (allowed: max, min)")
    if s.num_samples < 1:
        raise SpecError(f"search.num_samples: must be >= 1, got {s.num_samples}")
    if sched.name not in ("none", "asha"):
        raise SpecError(f"scheduler.name: unknown value {sched.name!r} (allowed: none, asha)")
    if s.algorithm == "optuna":
        if spec.grid:
            raise SpecError(
                f"space.{spec.grid[0].key}: grid axes cannot be searched by optuna; "
                "use choice (or search.algorithm: grid)"
            )
        if not s.metric:
            raise SpecError("search.metric: required for search.algorithm=optuna")
    if sched.name == "asha":
        if not sched.metric:
            raise SpecError("scheduler.metric: required for scheduler.name=asha")
        if not M.per_epoch(sched.metric):
            raise SpecError(
                f"scheduler.metric: {sched.metric!r} is only known at the end of a "
                "trial; ASHA needs a per-epoch metric (online/... or train/...)"
            )
    if sched.grace_period < 1 or sched.reduction_factor < 2:
        raise SpecError("scheduler.grace_period must be >= 1 and reduction_factor >= 2")
    if spec.num_trials() > 10_000:
        raise SpecError(f"space: {spec.num_trials()} trials; more than 10,000 is surely a mistake")
    # Every axis value (and each distribution's bounds) must give a valid trial config; the
    # whole grid is checked too, so a bad combination fails here and not in trial 37.
    example = _check_config(spec, {}, "base")
    for axis in spec.space:
        values = axis.values or (axis.low, axis.high)
        for value in values:
            if axis.kind == "randint":
                value = int(value)
            _check_config(spec, {axis.key: value}, f"space.{axis.key}={value!r}")
    grid_points = list(itertools.islice(spec.points(), 2000))
    configs = [example]
    for point in grid_points:
        configs.append(_check_config(spec, point, "space point " + json.dumps(point, default=str)))
    # The watched metric must be reported by every trial (a head axis changes the taps).
    for key, metric in (("search.metric", s.metric), ("scheduler.metric", sched.metric)):
        for config in configs if metric else ():
            _check_metric(spec, key, metric, config)


def _check_metric(spec: SweepSpec, key: str, metric: str, example: TrialSettings) -> None:
    problem = spec.info.check_metric(metric, example) or metric_problem(metric, example)
    if problem:
        raise SpecError(f"{key}: {problem}")


__all__ = ["Axis", "SpecError", "SweepSpec", "load_spec", "parse_spec"]
