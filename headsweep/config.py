"""Trial configuration: frozen dataclasses, one per concern, built from the nested dict a sweep
spec (or Tune) hands over.

`TrialConfig.from_dict` is the single boundary: an unknown key or a bad value raises `ValueError`
naming the dotted key (e.g. ``model.head.kappa``). Every section validates itself
(`validate(prefix)`); `TrialConfig.validate` adds the checks that span sections. Presets are data
(`HEAD_PRESETS`, `VIEW_RECIPES`), filled in under the user's own keys by a section's `expand`
hook while `headsweep.configtree.build` builds it.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from headsweep.configtree import as_plain, build, check, choice, flatten, merge, unflatten
from headsweep.presets import HEAD_PRESETS, VIEW_RECIPES
from headsweep.probe_config import SCHEDULES, LinearEvalConfig, ProbeConfig
from headsweep.view_config import AugConfig, ViewConfig

SPURIOUS_DATASETS = ("textures_v2",)  # data.name values data.spurious_rho applies to
SPURIOUS_TARGETS = ("coarse", "object")  # what the digit is correlated with


@dataclass(frozen=True)
class DataConfig:
    """Which data, how much, and how the digit feature is composed (docs/science.md §4.1-4.2)."""

    name: str = "digits_on_texture"  # key of headsweep.data.DATASETS
    root: str = "./data"  # torchvision on-disk formats live here
    download: bool = False
    n_train: int = 5000  # 0 = the whole split
    n_test: int = 1000
    seed: int = 0  # fixes the dataset itself (textures, digit pairing); the trial seed does not
    digit_size: int = 16  # digit resized to this many px, centred in 32x32 (32 = full frame)
    strength: float = 1.0  # s, the digit's feature strength
    soft_mask: bool = True  # m = D (soft) or 1[D > 0]
    # textures_v2: range of the per-image texture contrast, i.e. how strongly the textures
    # compete with the digit for the encoder's features (docs/science.md §9).
    texture_contrast: tuple[float, float] = (0.4, 0.8)
    # textures_v2 with a spurious correlation (headsweep.data.spurious): in the train split
    # (pretraining and probe fitting) the digit agrees with `spurious_target` for a fraction
    # rho of the images; the test split balances the groups (digit x spurious class). None = off.
    spurious_rho: float | None = None
    spurious_target: str = "coarse"  # coarse (5 classes) | object (20 classes)
    image_size: int = 32  # waterbirds: images resized to image_size x image_size
    # Vector data of the theory (§4.1): x = sum_k phi_k z_k e_k + noise * xi.
    dim: int = 20
    phi: tuple[float, ...] = (1.0, 0.8, 0.6, 0.4, 0.2)
    noise: float = 0.1

    def validate(self, prefix: str = "data.") -> None:
        from headsweep.data import DATASETS  # cycle: the dataset builders import this module

        choice(f"{prefix}name", self.name, DATASETS)
        check(f"{prefix}n_train", self.n_train >= 0, ">= 0", self.n_train)
        check(f"{prefix}n_test", self.n_test >= 0, ">= 0", self.n_test)
        check(f"{prefix}digit_size", 4 <= self.digit_size <= 32, "in [4, 32]", self.digit_size)
        check(f"{prefix}strength", 0.0 <= self.strength <= 1.0, "in [0, 1]", self.strength)
        low, high = (*self.texture_contrast, 0.0, 0.0)[:2]  # short lists fail below
        check(
            f"{prefix}texture_contrast",
            len(self.texture_contrast) == 2 and 0 < low <= high <= 1,
            "[low, high] with 0 < low <= high <= 1",
            self.texture_contrast,
        )
        rho = self.spurious_rho
        if rho is not None:
            check(f"{prefix}spurious_rho", 0.0 <= rho <= 1.0, "in [0, 1] or null (off)", rho)
            check(
                f"{prefix}spurious_rho",
                self.name in SPURIOUS_DATASETS,
                f"null for {prefix}name={self.name!r} (applies to {', '.join(SPURIOUS_DATASETS)})",
                rho,
            )
        choice(f"{prefix}spurious_target", self.spurious_target, SPURIOUS_TARGETS)
        check(f"{prefix}image_size", 8 <= self.image_size <= 512, "in [8, 512]", self.image_size)
        k = len(self.phi)
        check(f"{prefix}dim", self.dim >= k >= 1, f">= len({prefix}phi) = {k}", self.dim)
        check(f"{prefix}noise", self.noise >= 0, ">= 0", self.noise)


@dataclass(frozen=True)
class HeadConfig:
    """Projection head (docs/science.md §1). Fields a head does not use are ignored by it."""

    name: str = "mlp"  # key of headsweep.heads.HEADS
    preset: str = ""  # "" or a key of HEAD_PRESETS; explicit keys override it
    hidden: int = 512
    out: int = 128
    depth: int = 2  # number of Linear layers in the MLP
    batch_norm: bool = True
    last_bn: bool = False  # BN(affine=False) on the output (SAS critic)
    bias: bool = True
    kappa: float = 1.05  # fixed_reweight: r_i = kappa^-i
    levels: int = 5  # discrete: FSQ levels per dimension
    # topk_sae, sized relative to the SAE's input width d ([O] SimCLR: 100k latents, k = 1000
    # on d = 512); k/d is what keeps the bottleneck comparable across widths (§8).
    latents_per_dim: float = 8.0  # latents = round(latents_per_dim * d)
    k_per_dim: float = 0.25  # k = round(k_per_dim * d)
    sae_prelude: bool = False  # Linear-BN-ReLU before the SAE (Barlow variant of [O])

    @staticmethod
    def expand(values: dict[str, Any], prefix: str) -> dict[str, Any]:
        """A preset's fields under the keys given explicitly."""
        preset = values.get("preset")
        if not preset:
            return values
        if preset not in HEAD_PRESETS:
            raise ValueError(
                f"{prefix}preset: unknown preset {preset!r} (allowed: {', '.join(HEAD_PRESETS)})"
            )
        return {**HEAD_PRESETS[preset], **values}

    def validate(self, prefix: str = "model.head.") -> None:
        from headsweep.heads import HEADS  # cycle: the head builders import this module

        choice(f"{prefix}name", self.name, HEADS)
        for name in ("depth", "hidden", "out"):
            value = getattr(self, name)
            check(f"{prefix}{name}", value >= 1, ">= 1", value)
        check(f"{prefix}kappa", self.kappa > 0, "> 0", self.kappa)
        check(f"{prefix}levels", self.levels >= 2, ">= 2", self.levels)
        latents = self.latents_per_dim
        check(f"{prefix}latents_per_dim", latents > 0, "> 0", latents)
        check(
            f"{prefix}k_per_dim",
            0 < self.k_per_dim <= latents,
            f"in (0, {prefix}latents_per_dim={latents:g}]",
            self.k_per_dim,
        )


@dataclass(frozen=True)
class ModelConfig:
    backbone: str = "small_cnn"  # key of headsweep.backbones.BACKBONES
    widths: tuple[int, ...] = (32, 64, 128)  # small_cnn channels / mlp hidden widths
    stem_padding: int = 1  # resnet18 3x3 stem; [O]'s code uses 2
    head: HeadConfig = field(default_factory=HeadConfig)

    def validate(self, prefix: str = "model.") -> None:
        from headsweep.backbones import BACKBONES  # cycle: the backbones import this module

        choice(f"{prefix}backbone", self.backbone, BACKBONES)
        check(
            f"{prefix}widths",
            len(self.widths) >= 1 and all(w >= 1 for w in self.widths),
            "a non-empty list of positive widths",
            self.widths,
        )
        check(f"{prefix}stem_padding", 0 <= self.stem_padding <= 3, "in [0, 3]", self.stem_padding)
        self.head.validate(f"{prefix}head.")


@dataclass(frozen=True)
class LossConfig:
    name: str = "nt_xent"  # key of headsweep.losses.LOSSES
    temperature: float = 0.5
    lambda_offdiag: float = 0.0051  # Barlow Twins
    scale: float = 0.1  # Barlow Twins ([O])
    target: str = ""  # label target for supcon / cross_entropy (e.g. "coarse")
    mi_lambda: float = 0.0  # weight of the I_alpha bottleneck term [O]; 0 = baseline
    mi_alpha: int = 2

    def validate(self, targets: Sequence[str], prefix: str = "loss.") -> None:
        """`targets`: the label targets of the trial's dataset."""
        from headsweep.losses import LOSSES, SUPERVISED  # cycle: the losses import this module

        choice(f"{prefix}name", self.name, LOSSES)
        check(f"{prefix}temperature", self.temperature > 0, "> 0", self.temperature)
        check(f"{prefix}mi_lambda", self.mi_lambda >= 0, ">= 0", self.mi_lambda)
        check(f"{prefix}mi_alpha", self.mi_alpha >= 2, "an integer >= 2", self.mi_alpha)
        if self.name in SUPERVISED:
            need = f"set for {prefix}name={self.name!r}"
            check(f"{prefix}target", bool(self.target), need, self.target)
        if self.target:
            choice(f"{prefix}target", self.target, targets)


@dataclass(frozen=True)
class OptimConfig:
    name: str = "adam"  # adam | adamw | sgd | lars
    lr: float = 1e-3
    momentum: float = 0.9
    weight_decay: float = 1e-6
    lars_eta: float = 0.02  # trust coefficient (solo-learn default)
    lars_clip_lr: bool = True  # solo-learn's clip_lr: trust ratio / lr capped at 1
    lars_exclude_bias_n_norm: bool = True  # 1-D parameters skip trust ratio and decay
    schedule: str = "cosine"  # cosine | constant
    warmup_epochs: float = 0.0
    scale_lr_by_batch: bool = False  # lr * batch / 256 ([O])

    def validate(self, epochs: int, prefix: str = "optim.") -> None:
        """`epochs`: train.epochs, which bounds the warmup."""
        from headsweep.optim import OPTIMIZERS  # cycle: the optimisers import this module

        choice(f"{prefix}name", self.name, OPTIMIZERS)
        choice(f"{prefix}schedule", self.schedule, SCHEDULES)
        check(f"{prefix}lr", self.lr > 0, "> 0", self.lr)
        check(f"{prefix}weight_decay", self.weight_decay >= 0, ">= 0", self.weight_decay)
        check(f"{prefix}momentum", 0 <= self.momentum < 1, "in [0, 1)", self.momentum)
        warmup = self.warmup_epochs
        check(
            f"{prefix}warmup_epochs",
            0 <= warmup <= max(epochs, warmup if epochs == 0 else 0),
            f"in [0, train.epochs={epochs}]",
            warmup,
        )


@dataclass(frozen=True)
class TrainConfig:
    epochs: int = 10
    batch_size: int = 512
    seed: int = 0
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    precision: str = "auto"  # auto (bf16 on CUDA, fp32 on CPU) | fp32 | bf16
    threads: int = 0  # torch intra-op threads; 0 leaves torch's default
    # joint: both views in one batch (shared BatchNorm statistics); per_view: each view through
    # encoder and head separately, as solo-learn; auto: what aug.recipe's code does.
    forward: str = "auto"
    # Image tensors' memory layout. auto: channels_last for image data on every device, since
    # it measured faster on the CPU too (grid_cnn 1.34x, small_cnn 1.27-1.49x, BENCHMARKS.md)
    # as well as on tensor cores; contiguous keeps NCHW.
    memory_format: str = "auto"  # auto | channels_last | contiguous
    # k: the per-step I₂ metrics (train/mi, mi_lower, mi_upper) on steps 0, k, 2k, ... of each
    # epoch, their epoch means taken over those steps (1 = every step). 6: under 1% of a
    # quickstart epoch (2 of its 11 steps; all 11 cost 3-4%, BENCHMARKS.md).
    metrics_every: int = 6

    def validate(self, prefix: str = "train.") -> None:
        # 0 epochs: the untrained-encoder control (probes of the initial weights, §9).
        check(f"{prefix}epochs", self.epochs >= 0, ">= 0 (0 = untrained control)", self.epochs)
        check(f"{prefix}batch_size", self.batch_size >= 2, ">= 2", self.batch_size)
        check(f"{prefix}threads", self.threads >= 0, ">= 0", self.threads)
        check(f"{prefix}metrics_every", self.metrics_every >= 1, ">= 1", self.metrics_every)
        choice(f"{prefix}precision", self.precision, ("auto", "fp32", "bf16"))
        check(
            f"{prefix}device",
            self.device in ("auto", "cpu", "cuda") or self.device.startswith("cuda:"),
            "auto, cpu, cuda or cuda:N",
            self.device,
        )
        choice(f"{prefix}forward", self.forward, ("joint", "per_view"))
        choice(
            f"{prefix}memory_format", self.memory_format, ("auto", "channels_last", "contiguous")
        )


@dataclass(frozen=True)
class TrialConfig:
    data: DataConfig = field(default_factory=DataConfig)
    aug: AugConfig = field(default_factory=AugConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    probe: ProbeConfig = field(default_factory=ProbeConfig)

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any] | None = None) -> TrialConfig:
        """Build and validate a config from a nested dict (missing keys take defaults)."""
        cfg = build(cls, raw or {})
        if cfg.train.forward == "auto":  # resolved here so results record what ran
            forward = VIEW_RECIPES[cfg.aug.recipe]["forward"]
            cfg = dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, forward=forward))
        cfg.validate()
        return cfg

    def validate(self) -> None:
        """Every section checks itself; the sections' shared facts (the dataset's targets and
        feature count, the epoch budget) are handed to those that need them."""
        from headsweep.data import targets_of  # cycle: the dataset builders import this module

        self.data.validate()
        self.aug.validate(len(self.data.phi))
        self.model.validate()
        targets = targets_of(self.data)
        self.loss.validate(targets)
        self.optim.validate(self.train.epochs)
        self.train.validate()
        self.probe.validate(targets)

    def to_dict(self) -> dict[str, Any]:
        tree: dict[str, Any] = as_plain(dataclasses.asdict(self))
        return tree

    def warnings(self) -> list[str]:
        """Settings that run but may not measure what the experiment means."""
        from headsweep.data import targets_of  # cycle: the dataset builders import this module

        out = []
        if "digit" in targets_of(self.data) and self.data.strength > 0:
            for i, view in enumerate(self.aug.views, 1):
                if view.resized_crop:
                    out.append(
                        f"aug.view{i}.crop_min_scale={view.crop_min_scale:g}: a resized crop on "
                        f"digit-composed data ({self.data.name}) can cut or move the digit; "
                        "[X]'s recipe (sas_digits) uses none"
                    )
        return out

    def flat(self) -> dict[str, Any]:
        """Dotted keys -> values: what MLflow params and Parquet columns carry."""
        return flatten(self.to_dict())

    def replace(self, overrides: Mapping[str, Any]) -> TrialConfig:
        """A copy with dotted-key overrides applied, validated again. A new `aug.recipe` brings
        its own views and forward mode (view keys given in the same overrides still win)."""
        base = self.to_dict()
        if "aug.recipe" in overrides:
            base["aug"] = {k: v for k, v in base["aug"].items() if k not in ("view1", "view2")}
            base["train"]["forward"] = "auto"
        return TrialConfig.from_dict(merge(base, unflatten(overrides)))


__all__ = [
    "AugConfig",
    "DataConfig",
    "HeadConfig",
    "LinearEvalConfig",
    "LossConfig",
    "ModelConfig",
    "OptimConfig",
    "ProbeConfig",
    "TrainConfig",
    "TrialConfig",
    "ViewConfig",
]
