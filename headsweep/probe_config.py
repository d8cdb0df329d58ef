"""The probe sections of a trial config: the frozen-feature probes (`ProbeConfig`) and [O]'s
linear evaluation (`LinearEvalConfig`) nested in it. Imported through `headsweep.config` like
every other section."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from headsweep.configtree import check, choice

SCHEDULES = ("cosine", "constant")  # learning-rate schedules (optim.schedule too)
PROBE_PROTOCOLS = ("sas", "ridge")  # frozen-feature probes of headsweep.probes
LINEAR_EVAL_OPTIMIZERS = ("sgd", "lars")
WORST_GROUP_MODES = ("off", "erm", "dfr", "both")  # headsweep.groups


@dataclass(frozen=True)
class LinearEvalConfig:
    """[O]'s reporting protocol (solo-learn's main_linear): a linear classifier trained with
    SGD or LARS on frozen encoder features of augmented training images (resized crop + flip),
    evaluated on clean test images; no fine-tuning. epochs = 0 turns it off."""

    epochs: int = 0
    optimizer: str = "sgd"  # sgd | lars
    lr: float = 0.1
    momentum: float = 0.9
    weight_decay: float = 0.0
    batch_size: int = 256
    schedule: str = "cosine"  # cosine | constant
    warmup_epochs: float = 0.0  # linear warmup ([O]'s CIFAR linear configs: 10)
    crop_min_scale: float = 0.08  # the training views' resized crop (1 = none)
    horizontal_flip_prob: float = 0.5
    taps: tuple[str, ...] = ("pre",)  # [O] evaluates the encoder only

    def validate(self, prefix: str = "probe.linear_eval.") -> None:
        check(f"{prefix}epochs", self.epochs >= 0, ">= 0", self.epochs)
        choice(f"{prefix}optimizer", self.optimizer, LINEAR_EVAL_OPTIMIZERS)
        choice(f"{prefix}schedule", self.schedule, SCHEDULES)
        check(f"{prefix}lr", self.lr > 0, "> 0", self.lr)
        check(f"{prefix}momentum", 0 <= self.momentum < 1, "in [0, 1)", self.momentum)
        check(f"{prefix}weight_decay", self.weight_decay >= 0, ">= 0", self.weight_decay)
        check(f"{prefix}batch_size", self.batch_size >= 1, ">= 1", self.batch_size)
        warmup = self.warmup_epochs
        ok = warmup >= 0 and (self.epochs == 0 or warmup <= self.epochs)  # 0 epochs: off
        check(f"{prefix}warmup_epochs", ok, f"in [0, {prefix}epochs={self.epochs}]", warmup)
        scale, flip = self.crop_min_scale, self.horizontal_flip_prob
        check(f"{prefix}crop_min_scale", 0 < scale <= 1, "in (0, 1]", scale)
        check(f"{prefix}horizontal_flip_prob", 0 <= flip <= 1, "in [0, 1]", flip)


@dataclass(frozen=True)
class ProbeConfig:
    """Frozen-feature probes (docs/science.md §5, §8); the protocol is stored with every result.

    `sas`: multinomial logistic regression, objective mean CE + penalty * ||W||^2 (SAS's
    `train_clf`, no 1/2), minimised by L-BFGS until the objective stops changing (at most
    `steps` iterations). `ridge`: closed-form ridge on one-hot targets."""

    protocol: str = "sas"  # sas | ridge
    penalty: float = 1e-3
    steps: int = 500
    standardize: bool = False  # standardising removes part of the pre/post effect
    few_shot: int = 0  # labelled examples per class for the probe's training set (0 = all)
    targets: tuple[str, ...] = ()  # () = every target of the dataset
    online_n: int = 1000  # examples for the cheap per-epoch ridge probe (0 = off)
    # Effective rank, alignment, uniformity of every tap (headsweep.diagnostics): per epoch
    # on the online subset (needs online_n > 0), exactly on the test split at the end.
    diagnostics: bool = True
    # Weighted kNN probe on every tap and target (headsweep.knn): k neighbours by cosine
    # similarity voting with exp(sim / T); the InstDisc / solo-learn monitor's k = 200,
    # T = 0.07. knn_k = 0 turns it off.
    knn_k: int = 200
    knn_temperature: float = 0.07
    # Few-shot curve (headsweep.fewshot): for each n (labelled examples per class, 0 = all),
    # few_shot_subsets class-balanced random training subsets, one probe each. () = off.
    few_shot_curve: tuple[int, ...] = ()
    few_shot_subsets: int = 5
    # Data with groups (label x spurious attribute; headsweep.groups): average and worst-group
    # test accuracy of the probe fitted on all training rows (erm), on a group-balanced subset
    # of them (dfr, Kirichenko et al. 2022), both, or off.
    worst_group: str = "both"
    linear_eval: LinearEvalConfig = field(default_factory=LinearEvalConfig)

    def validate(self, targets: Sequence[str], prefix: str = "probe.") -> None:
        """`targets`: the label targets of the trial's dataset."""
        for target in self.targets:
            choice(f"{prefix}targets", target, targets)
        choice(f"{prefix}protocol", self.protocol, PROBE_PROTOCOLS)
        check(f"{prefix}penalty", self.penalty >= 0, ">= 0", self.penalty)
        check(f"{prefix}steps", self.steps >= 1, ">= 1", self.steps)
        check(f"{prefix}few_shot", self.few_shot >= 0, ">= 0", self.few_shot)
        check(f"{prefix}online_n", self.online_n >= 0, ">= 0", self.online_n)
        check(f"{prefix}knn_k", self.knn_k >= 0, ">= 0 (0 = off)", self.knn_k)
        temperature = self.knn_temperature
        check(f"{prefix}knn_temperature", temperature > 0, "> 0", temperature)
        curve = self.few_shot_curve
        shots_ok = all(n >= 0 for n in curve)
        check(f"{prefix}few_shot_curve", shots_ok, "shots per class >= 0 (0 = all)", curve)
        check(f"{prefix}few_shot_curve", len(set(curve)) == len(curve), "without repeats", curve)
        subsets = self.few_shot_subsets
        check(f"{prefix}few_shot_subsets", subsets >= 1, ">= 1", subsets)
        choice(f"{prefix}worst_group", self.worst_group, WORST_GROUP_MODES)
        self.linear_eval.validate(f"{prefix}linear_eval.")
