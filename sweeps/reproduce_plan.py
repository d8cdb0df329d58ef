"""The plan of `headsweep reproduce`: every sweep of the CPU-scale reproduction, in order, as
data. A step only selects a spec, its profiles and a name; seeds, grids and thresholds stay what
the specs fix (`--seeds` replaces the seed axis, and then the names say so).

Time estimates are priors in sweep seconds per trial, measured by the full reproduction of
2026-11-30 on this project's 2-core machine (REPRODUCTION.md, its Sweeps table; 3.7 h in all):
the image sweeps took 5,365 s for 102 trials (~53 s a trial, two at a time), the sweeps with
untrained controls (probes only) 1,230 s for 45 (~27 s), the synthetic ones 230 s for 216 and
30 s for 10; the six anchors (4x the epochs) 2.4x what their trials take in the short sweeps; a
calibration control 29-43 s (92-119 s for an anchor's); the rest of a step (the analysis, the
figures, the report) ~22 s. `headsweep reproduce` rescales the priors by what the finished
steps of the root actually took.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from analysis.reproduction import TRENDS, StepView
from headsweep.configtree import VARIANT
from sweeps.overrides import SpecError, apply_profiles, override
from sweeps.spec import SweepSpec, parse_spec
from sweeps.specfile import read_spec_file
from trainables import TRAINABLES

ANCHOR_EPOCHS = 4  # the anchor's epochs, as a multiple of the profile's
ANCHOR_COST = 2.4  # an anchor trial's time over a short trial's (see the module docstring)
CALIBRATION_S = 35.0  # one control trained in-process (see the module docstring)
STEP_OVERHEAD_S = 25.0  # Ray's start (first step), the analysis and the figures
IMAGE_S, CONTROLS_S = 53.0, 27.0  # sweep seconds per trial (see the module docstring)
REPOSITORY = Path(__file__).resolve().parents[1]  # the specs' paths are relative to it


@dataclass(frozen=True)
class Step:
    name: str  # the sweep name
    spec: str  # the spec file, relative to the repository
    profiles: tuple[str, ...]
    trends: tuple[str, ...]
    prior_s: float  # sweep seconds per trial (a prior; see the module docstring)
    requires: str = ""  # a profile the spec must have, else the step is not planned ...
    missing: str = ""  # ... and why that is no loss
    anchored: bool = False  # gets an anchor step (4x epochs, 1 seed)
    anchor_of: str = ""  # this step is the anchor of that one


# In the order of issue 15; anchors follow, so every short verdict exists before the long runs.
SHORT = (
    Step(
        "xue_synthetic_linear",
        "sweeps/xue_synthetic_linear.yaml",
        (),
        ("T1", "T2", "T3", "T4", "E5"),
        1.1,
    ),
    Step("xue_synthetic_relu", "sweeps/xue_synthetic_relu.yaml", (), ("T5",), 3.0),
    Step("xue_digits_cpu", "sweeps/xue_digits.yaml", ("cpu",), ("T6",), IMAGE_S, anchored=True),
    Step(
        "xue_digits_wd_cpu",
        "sweeps/xue_digits.yaml",
        ("cpu", "cpu_weight_decay"),
        ("T7",),
        IMAGE_S,
        anchored=True,
    ),
    Step(
        "xue_digits_strength_cpu",
        "sweeps/xue_digits.yaml",
        ("cpu", "cpu_strength"),
        (),
        IMAGE_S,
        requires="cpu_strength",
        missing="its `strength` profile is the GPU grid (p_drop 0.6, six strengths) and the "
        "plan does not invent a CPU grid; no trend of docs/science.md §6 judges it",
    ),
    Step(
        "xue_reweight_cpu",
        "sweeps/xue_reweight.yaml",
        ("cpu",),
        ("T8",),
        CONTROLS_S,
        anchored=True,
    ),
    Step(
        "xue_coarse_fine_cpu",
        "sweeps/xue_coarse_fine.yaml",
        ("cpu",),
        ("T9",),
        CONTROLS_S,
        anchored=True,
    ),
    Step(
        "ouyang_bottleneck_cpu",
        "sweeps/ouyang_bottleneck.yaml",
        ("cpu",),
        ("T10", "T11", "T12"),
        IMAGE_S,
        anchored=True,
    ),
    Step(  # barlow first: cpu then sets the CPU-scale optimiser over Barlow's LARS lr
        "ouyang_barlow_cpu",
        "sweeps/ouyang_bottleneck.yaml",
        ("barlow", "cpu"),
        ("T10", "T11", "T12"),
        IMAGE_S,
        anchored=True,
    ),
    Step("ouyang_search_cpu", "sweeps/ouyang_search.yaml", ("cpu",), (), IMAGE_S),
)
PLAN = SHORT + tuple(
    replace(s, name=f"{s.name}_anchor", anchored=False, anchor_of=s.name)
    for s in SHORT
    if s.anchored
)
NOT_ANCHORED = (
    "the synthetic sweeps run to convergence (a step count, no epochs; E5 checks it); "
    "ouyang_search is a search with no trend to confirm"
)


@dataclass(frozen=True)
class Built:
    """A step made concrete: the validated spec and the command that runs the same sweep."""

    step: Step
    spec: SweepSpec
    command: str  # the equivalent commands, one a line (the calibration first where it runs)
    seeds: int  # seed-axis length (0: the spec has no seed axis)

    @property
    def calibrates(self) -> bool:
        return self.spec.info.calibrates

    def estimate_s(self) -> float:
        cost = ANCHOR_COST if self.step.anchor_of else 1.0
        calibration = CALIBRATION_S * cost if self.calibrates else 0.0
        return self.spec.num_trials() * self.step.prior_s * cost + calibration + STEP_OVERHEAD_S

    def view(self) -> StepView:
        label = " ".join(
            [Path(self.step.spec).name, *(f"--profile {p}" for p in self.step.profiles)]
        )
        if self.step.anchor_of:
            label += f", train.epochs ×{ANCHOR_EPOCHS}, seed 0"
        return StepView(
            self.step.name,
            self.spec.name,
            self.step.trends,
            label,
            self.command,
            self.step.anchor_of,
        )


def parse_only(text: str | None) -> set[str] | None:
    """`--only T6,T8`: the trends, checked against the known ones."""
    if text is None:
        return None
    trends = {t.strip().upper() for t in text.split(",") if t.strip()}
    unknown = sorted(trends - set(TRENDS))
    if not trends or unknown:
        raise SpecError(
            f"--only: unknown trend {unknown[0] if unknown else repr(text)} "
            f"(known: {', '.join(TRENDS)})"
        )
    return trends


def select(only: set[str] | None) -> list[Step]:
    """The steps whose trends intersect `only` (every step when None), in plan order."""
    return [s for s in PLAN if only is None or set(s.trends) & only]


def _read(step: Step) -> dict[str, Any]:
    """The step's spec with its profiles applied (the file found from any working directory)."""
    return apply_profiles(read_spec_file(REPOSITORY / step.spec), list(step.profiles))


def _sets_in_variants(raw: Mapping[str, Any], key: str) -> bool:
    variants = (raw.get("space") or {}).get(VARIANT) or {}
    values = variants.get("grid", []) if isinstance(variants, dict) else []
    return any(key in v for v in values if isinstance(v, dict))


def build(step: Step, seeds: int | None, cwd: Path) -> Built:
    """The step's spec: its profiles, then (anchors) 4x the profile's epochs and one seed, or
    (`seeds`) the seed axis replaced by range(seeds); validated as `headsweep run` would."""
    raw = _read(step)
    seed_key = TRAINABLES[raw["trainable"]].seed_key
    axis = f"space.{seed_key}"
    explicit: dict[str, Any] = {}
    sets = [f"--profile {p}" for p in step.profiles]
    note = ""
    if step.anchor_of:
        epochs = int(raw["base"]["train"]["epochs"]) * ANCHOR_EPOCHS
        # Applied as a profile applies its keys: variants that set train.epochs (the untrained
        # controls, 0) keep theirs; `run --set` refuses a key a variant sets.
        raw = override(raw, {"train.epochs": epochs})
        sets.append(f"--set train.epochs={epochs}")
        if _sets_in_variants(raw, "train.epochs"):
            note = "   # as a profile would: the untrained variants keep train.epochs 0"
        seeds = 1
    has_axis = seed_key in (raw.get("space") or {})
    if seeds is not None and has_axis:
        explicit[axis] = {"grid": list(range(seeds))}
        sets.append(f"--set '{axis}={{grid: {list(range(seeds))}}}'")
    spec = parse_spec(raw, explicit, cwd=cwd)
    seed_axis = next((a for a in spec.space if a.key == seed_key), None)
    n_seeds = len(seed_axis.values) if seed_axis is not None and seed_axis.kind == "grid" else 0
    command = " ".join(["headsweep run", step.spec, *sets, f"--name {step.name}"]) + note
    if spec.info.calibrates:  # the control `headsweep reproduce` trains first (seed 0)
        control = [s for s in sets if not s.startswith(f"--set '{axis}")]
        command = " ".join(["headsweep calibrate", step.spec, *control]) + note + "\n" + command
    return Built(step, spec, command, n_seeds)


def default_seeds(step: Step) -> int | None:
    """How many seeds the step's spec (after its profiles) fixes; None without a seed axis."""
    raw = _read(step)
    axis = (raw.get("space") or {}).get(TRAINABLES[raw["trainable"]].seed_key)
    return len(axis["grid"]) if isinstance(axis, dict) and "grid" in axis else None


def plan(
    only: set[str] | None, seeds: int | None, cwd: Path
) -> tuple[list[Built], list[tuple[str, str]]]:
    """The selected steps built, and the steps not planned with the reason. With `seeds`
    different from a spec's own count, the sweep name says it (`..._seeds5`), so a root that
    holds the default sweeps never mistakes one for the other."""
    built, skipped = [], []
    renamed: dict[str, str] = {}
    for step in select(only):
        profiles = read_spec_file(REPOSITORY / step.spec).get("profiles") or {}
        if step.requires and step.requires not in profiles:
            have = ", ".join(profiles) or "none"
            skipped.append(
                (
                    step.name,
                    f"{step.spec} has no `{step.requires}` profile (it has: {have}); "
                    + step.missing,
                )
            )
            continue
        own = default_seeds(step)
        if step.anchor_of:
            step = replace(step, anchor_of=renamed.get(step.anchor_of, step.anchor_of))
        elif seeds is not None and own is not None and seeds != own:
            renamed[step.name] = f"{step.name}_seeds{seeds}"
            step = replace(step, name=renamed[step.name])
        built.append(build(step, seeds, cwd))
    return built, skipped


def views(built: Iterable[Built]) -> list[StepView]:
    return [b.view() for b in built]


def hours(seconds: float) -> str:
    whole = max(0, round(seconds))
    return f"{whole // 3600}:{whole // 60 % 60:02d}:{whole % 60:02d}"
