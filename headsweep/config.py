"""Trial configuration: frozen dataclasses, one per concern, built from the nested dict a sweep
spec (or Tune) hands over.

`TrialConfig.from_dict` is the single boundary: an unknown key or a bad value raises `ValueError`
naming the dotted key (e.g. ``model.head.kappa``). Presets are data (`HEAD_PRESETS`), applied
under the user's own keys.
"""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from headsweep.presets import DEFAULT_RECIPE, HEAD_PRESETS, VIEW_RECIPES


@dataclass(frozen=True)
class DataConfig:
    """Which data, how much of it, and how the digit feature is composed (SCIENCE.md §4.1-4.2)."""

    name: str = "digits_on_texture"  # key of headsweep.data.DATASETS
    root: str = "./data"  # torchvision on-disk formats live here
    download: bool = False
    n_train: int = 5000  # 0 = the whole split
    n_test: int = 1000
    seed: int = 0  # fixes the dataset itself (textures, digit pairing); the trial seed does not
    digit_size: int = 16  # digit resized to this many px, centred in 32x32 (32 = full frame)
    strength: float = 1.0  # s, the digit's feature strength
    soft_mask: bool = True  # m = D (soft) or 1[D > 0]
    # Vector data of the theory (§4.1): x = sum_k phi_k z_k e_k + noise * xi.
    dim: int = 20
    phi: tuple[float, ...] = (1.0, 0.8, 0.6, 0.4, 0.2)
    noise: float = 0.1


@dataclass(frozen=True)
class ViewConfig:
    """One view's pipeline, solo-learn's field names, applied in [O]'s order: resized crop
    (area fraction in [crop_min_scale, crop_max_scale], aspect ratio in (3/4, 4/3), bicubic) or
    pad-and-crop shift -> colour jitter with `color_jitter_prob` -> grayscale -> Gaussian blur
    (sigma ~ U(0.1, 2)) -> solarization (threshold 128/255) -> horizontal flip -> normalise.
    Defaults are the `sas_digits` recipe (docs/science.md §4.2, §8)."""

    crop_min_scale: float = 1.0  # 1 and 1: no resized crop
    crop_max_scale: float = 1.0
    crop_pad: int = 0  # pad-and-crop shift in px (RandomCrop(padding)); 0 = none
    brightness: float = 0.4
    contrast: float = 0.4
    saturation: float = 0.4
    hue: float = 0.1
    color_jitter_prob: float = 0.8
    gray_scale_prob: float = 0.2
    gaussian_prob: float = 0.0
    solarization_prob: float = 0.0
    horizontal_flip_prob: float = 0.5

    @property
    def resized_crop(self) -> bool:
        return self.crop_min_scale < 1.0

    @property
    def jitter(self) -> tuple[float, float, float, float]:
        return (self.brightness, self.contrast, self.saturation, self.hue)


@dataclass(frozen=True)
class AugConfig:
    """Two-view augmentation, applied per sample on the device (headsweep.views). `recipe` names
    a preset of `VIEW_RECIPES` that fills view1/view2; keys given under view1/view2 win."""

    recipe: str = DEFAULT_RECIPE
    view1: ViewConfig = field(default_factory=ViewConfig)
    view2: ViewConfig = field(default_factory=ViewConfig)
    p_drop: float = 0.0  # per pair: exactly one view loses the digit with this probability
    # Vector data: per-feature drop probability p_k (one random view), and sign-flip features.
    feature_drop: tuple[float, ...] = ()
    sign_flip: tuple[int, ...] = ()

    @property
    def views(self) -> tuple[ViewConfig, ViewConfig]:
        return (self.view1, self.view2)

    @property
    def symmetric(self) -> bool:
        return self.view1 == self.view2


@dataclass(frozen=True)
class HeadConfig:
    """Projection head (SCIENCE.md §1). Fields a head does not use are ignored by it."""

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


@dataclass(frozen=True)
class ModelConfig:
    backbone: str = "small_cnn"  # key of headsweep.backbones.BACKBONES
    widths: tuple[int, ...] = (32, 64, 128)  # small_cnn channels / mlp hidden widths
    stem_padding: int = 1  # resnet18 3x3 stem; [O]'s code uses 2
    head: HeadConfig = field(default_factory=HeadConfig)


@dataclass(frozen=True)
class LossConfig:
    name: str = "nt_xent"  # key of headsweep.losses.LOSSES
    temperature: float = 0.5
    lambda_offdiag: float = 0.0051  # Barlow Twins
    scale: float = 0.1  # Barlow Twins ([O])
    target: str = ""  # label target for supcon / cross_entropy (e.g. "coarse")
    mi_lambda: float = 0.0  # weight of the I_alpha bottleneck term [O]; 0 = baseline
    mi_alpha: int = 2


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
    crop_min_scale: float = 0.08  # the training views' resized crop (1 = none)
    horizontal_flip_prob: float = 0.5
    taps: tuple[str, ...] = ("pre",)  # [O] evaluates the encoder only


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
    linear_eval: LinearEvalConfig = field(default_factory=LinearEvalConfig)


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
        _validate(cfg)
        return cfg

    def to_dict(self) -> dict[str, Any]:
        return _as_plain(dataclasses.asdict(self))

    def warnings(self) -> list[str]:
        """Settings that run but may not measure what the experiment means."""
        from headsweep.data import targets_of

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


# --------------------------------------------------------------------------- dict plumbing


def flatten(tree: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for key, value in tree.items():
        dotted = f"{prefix}{key}"
        if isinstance(value, Mapping):
            flat.update(flatten(value, dotted + "."))
        else:
            flat[dotted] = value
    return flat


def unflatten(flat: Mapping[str, Any]) -> dict[str, Any]:
    tree: dict[str, Any] = {}
    for dotted, value in flat.items():
        node = tree
        *parents, leaf = dotted.split(".")
        for part in parents:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ValueError(f"{dotted}: '{part}' is both a value and a section")
        node[leaf] = value
    return tree


def merge(base: Mapping[str, Any], update: Mapping[str, Any]) -> dict[str, Any]:
    """Recursive dict merge; `update` wins."""
    out = dict(base)
    for key, value in update.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), Mapping):
            out[key] = merge(out[key], value)
        else:
            out[key] = value
    return out


def _as_plain(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _as_plain(v) for k, v in value.items()}
    if isinstance(value, tuple | list):
        return [_as_plain(v) for v in value]
    return value


# --------------------------------------------------------------------------- typed building


def build(cls: type, raw: Mapping[str, Any], prefix: str = "") -> Any:
    """Any config dataclass from a nested dict: types coerced, unknown keys refused by name."""
    if not isinstance(raw, Mapping):
        raise ValueError(f"{prefix.rstrip('.') or 'config'}: expected a mapping, got {raw!r}")
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    unknown = sorted(set(raw) - set(names))
    if unknown:
        raise ValueError(
            f"unknown config key '{prefix}{unknown[0]}' (allowed in "
            f"'{prefix.rstrip('.') or 'config'}': {', '.join(names)})"
        )
    values = dict(raw)
    if cls is HeadConfig and values.get("preset"):
        preset = values["preset"]
        if preset not in HEAD_PRESETS:
            raise ValueError(
                f"{prefix}preset: unknown preset {preset!r} (allowed: {', '.join(HEAD_PRESETS)})"
            )
        values = {**HEAD_PRESETS[preset], **values}
    if cls is AugConfig:
        values = _apply_recipe(values, prefix)
    kwargs = {}
    for name in names:
        if name not in values:
            continue
        hint = hints[name]
        key = f"{prefix}{name}"
        if dataclasses.is_dataclass(hint):
            kwargs[name] = build(hint, values[name], key + ".")
        else:
            kwargs[name] = _coerce(values[name], hint, key)
    return cls(**kwargs)


def _apply_recipe(values: dict[str, Any], prefix: str) -> dict[str, Any]:
    """The recipe's per-view settings under the spec's own view1/view2 keys."""
    recipe = values.get("recipe", DEFAULT_RECIPE)
    if recipe not in VIEW_RECIPES:
        raise ValueError(
            f"{prefix}recipe: unknown recipe {recipe!r} (allowed: {', '.join(VIEW_RECIPES)})"
        )
    out = dict(values)
    for view in ("view1", "view2"):
        given = values.get(view, {})
        if not isinstance(given, Mapping):
            raise ValueError(f"{prefix}{view}: expected a mapping, got {given!r}")
        out[view] = {**VIEW_RECIPES[recipe][view], **given}
    return out


def _coerce(value: Any, hint: Any, key: str) -> Any:
    origin = typing.get_origin(hint)
    if origin is tuple:
        if isinstance(value, str | bytes) or not isinstance(value, list | tuple):
            raise ValueError(f"{key}: expected a list, got {value!r}")
        args = typing.get_args(hint)
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_coerce(v, args[0], f"{key}[{i}]") for i, v in enumerate(value))
        if len(value) != len(args):
            raise ValueError(f"{key}: expected {len(args)} values, got {len(value)}")
        return tuple(
            _coerce(v, a, f"{key}[{i}]") for i, (v, a) in enumerate(zip(value, args, strict=True))
        )
    if hint is bool:
        if isinstance(value, bool):
            return value
        raise ValueError(f"{key}: expected true or false, got {value!r}")
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, int | float) or value != int(value):
            raise ValueError(f"{key}: expected an integer, got {value!r}")
        return int(value)
    if hint is float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ValueError(f"{key}: expected a number, got {value!r}")
        return float(value)
    if hint is str:
        if not isinstance(value, str):
            raise ValueError(f"{key}: expected a string, got {value!r}")
        return value
    if isinstance(hint, types.UnionType):  # pragma: no cover - no unions in the config today
        raise TypeError(f"{key}: union types are not supported")
    raise TypeError(f"{key}: unsupported config type {hint}")


# --------------------------------------------------------------------------- value checks


def _choice(key: str, value: str, allowed: typing.Iterable[str]) -> None:
    allowed = list(allowed)
    if value not in allowed:
        raise ValueError(f"{key}: unknown value {value!r} (allowed: {', '.join(allowed)})")


def _check(key: str, ok: bool, need: str, value: Any) -> None:
    if not ok:
        raise ValueError(f"{key}: must be {need}, got {value!r}")


def _validate(cfg: TrialConfig) -> None:
    # Registries live with their builders; imported here to keep config free of torch modules.
    from headsweep.backbones import BACKBONES
    from headsweep.data import DATASETS, targets_of
    from headsweep.heads import HEADS
    from headsweep.losses import LOSSES

    d, a, m, h, lo, o, t, p = (
        cfg.data,
        cfg.aug,
        cfg.model,
        cfg.model.head,
        cfg.loss,
        cfg.optim,
        cfg.train,
        cfg.probe,
    )
    _choice("data.name", d.name, DATASETS)
    _check("data.n_train", d.n_train >= 0, ">= 0", d.n_train)
    _check("data.n_test", d.n_test >= 0, ">= 0", d.n_test)
    _check("data.digit_size", 4 <= d.digit_size <= 32, "in [4, 32]", d.digit_size)
    _check("data.strength", 0.0 <= d.strength <= 1.0, "in [0, 1]", d.strength)
    _check("data.dim", d.dim >= len(d.phi) >= 1, f">= len(data.phi) = {len(d.phi)}", d.dim)
    _check("data.noise", d.noise >= 0, ">= 0", d.noise)
    _check("aug.p_drop", 0.0 <= a.p_drop <= 1.0, "in [0, 1]", a.p_drop)
    for i, v in enumerate(a.views, 1):
        _validate_view(f"aug.view{i}", v)
    _check(
        "aug.feature_drop",
        len(a.feature_drop) in (0, len(d.phi)) and all(0 <= v <= 1 for v in a.feature_drop),
        f"empty or {len(d.phi)} probabilities in [0, 1]",
        a.feature_drop,
    )
    _check(
        "aug.sign_flip",
        all(0 <= j < len(d.phi) for j in a.sign_flip),
        f"feature indices in [0, {len(d.phi)})",
        a.sign_flip,
    )
    _choice("model.backbone", m.backbone, BACKBONES)
    _check(
        "model.widths",
        len(m.widths) >= 1 and all(w >= 1 for w in m.widths),
        "a non-empty list of positive widths",
        m.widths,
    )
    _check("model.stem_padding", 0 <= m.stem_padding <= 3, "in [0, 3]", m.stem_padding)
    _choice("model.head.name", h.name, HEADS)
    _check("model.head.depth", h.depth >= 1, ">= 1", h.depth)
    _check("model.head.hidden", h.hidden >= 1, ">= 1", h.hidden)
    _check("model.head.out", h.out >= 1, ">= 1", h.out)
    _check("model.head.kappa", h.kappa > 0, "> 0", h.kappa)
    _check("model.head.levels", h.levels >= 2, ">= 2", h.levels)
    _check("model.head.latents_per_dim", h.latents_per_dim > 0, "> 0", h.latents_per_dim)
    _check(
        "model.head.k_per_dim",
        0 < h.k_per_dim <= h.latents_per_dim,
        f"in (0, model.head.latents_per_dim={h.latents_per_dim:g}]",
        h.k_per_dim,
    )
    _choice("loss.name", lo.name, LOSSES)
    _check("loss.temperature", lo.temperature > 0, "> 0", lo.temperature)
    _check("loss.mi_lambda", lo.mi_lambda >= 0, ">= 0", lo.mi_lambda)
    _check("loss.mi_alpha", lo.mi_alpha >= 2, "an integer >= 2", lo.mi_alpha)
    targets = targets_of(d)
    if lo.name in ("supcon", "cross_entropy"):
        _check("loss.target", bool(lo.target), f"set for loss.name={lo.name!r}", lo.target)
    if lo.target:
        _choice("loss.target", lo.target, targets)
    for target in p.targets:
        _choice("probe.targets", target, targets)
    _choice("optim.name", o.name, ("adam", "adamw", "sgd", "lars"))
    _choice("optim.schedule", o.schedule, ("cosine", "constant"))
    _check("optim.lr", o.lr > 0, "> 0", o.lr)
    _check("optim.weight_decay", o.weight_decay >= 0, ">= 0", o.weight_decay)
    _check("optim.momentum", 0 <= o.momentum < 1, "in [0, 1)", o.momentum)
    _check(
        "optim.warmup_epochs",
        0 <= o.warmup_epochs <= max(t.epochs, o.warmup_epochs if t.epochs == 0 else 0),
        f"in [0, train.epochs={t.epochs}]",
        o.warmup_epochs,
    )
    # 0 epochs: the untrained-encoder control (probes of the initial weights, §9).
    _check("train.epochs", t.epochs >= 0, ">= 0 (0 = untrained control)", t.epochs)
    _check("train.batch_size", t.batch_size >= 2, ">= 2", t.batch_size)
    _check("train.threads", t.threads >= 0, ">= 0", t.threads)
    _choice("train.precision", t.precision, ("auto", "fp32", "bf16"))
    _check(
        "train.device",
        t.device in ("auto", "cpu", "cuda") or t.device.startswith("cuda:"),
        "auto, cpu, cuda or cuda:N",
        t.device,
    )
    _choice("train.forward", t.forward, ("joint", "per_view"))
    _choice("probe.protocol", p.protocol, ("sas", "ridge"))
    _check("probe.penalty", p.penalty >= 0, ">= 0", p.penalty)
    _check("probe.steps", p.steps >= 1, ">= 1", p.steps)
    _check("probe.few_shot", p.few_shot >= 0, ">= 0", p.few_shot)
    _check("probe.online_n", p.online_n >= 0, ">= 0", p.online_n)
    le = p.linear_eval
    _check("probe.linear_eval.epochs", le.epochs >= 0, ">= 0", le.epochs)
    _choice("probe.linear_eval.optimizer", le.optimizer, ("sgd", "lars"))
    _choice("probe.linear_eval.schedule", le.schedule, ("cosine", "constant"))
    _check("probe.linear_eval.lr", le.lr > 0, "> 0", le.lr)
    _check("probe.linear_eval.momentum", 0 <= le.momentum < 1, "in [0, 1)", le.momentum)
    _check("probe.linear_eval.weight_decay", le.weight_decay >= 0, ">= 0", le.weight_decay)
    _check("probe.linear_eval.batch_size", le.batch_size >= 1, ">= 1", le.batch_size)
    _check(
        "probe.linear_eval.crop_min_scale",
        0 < le.crop_min_scale <= 1,
        "in (0, 1]",
        le.crop_min_scale,
    )
    _check(
        "probe.linear_eval.horizontal_flip_prob",
        0 <= le.horizontal_flip_prob <= 1,
        "in [0, 1]",
        le.horizontal_flip_prob,
    )


def _validate_view(key: str, v: ViewConfig) -> None:
    for name in (
        "color_jitter_prob",
        "gray_scale_prob",
        "gaussian_prob",
        "solarization_prob",
        "horizontal_flip_prob",
    ):
        value = getattr(v, name)
        _check(f"{key}.{name}", 0.0 <= value <= 1.0, "a probability in [0, 1]", value)
    for name in ("brightness", "contrast", "saturation"):
        value = getattr(v, name)
        _check(f"{key}.{name}", 0.0 <= value < math.inf, ">= 0 and finite", value)
    _check(f"{key}.hue", 0.0 <= v.hue <= 0.5, "in [0, 0.5]", v.hue)
    _check(f"{key}.crop_min_scale", 0.0 < v.crop_min_scale <= 1.0, "in (0, 1]", v.crop_min_scale)
    _check(
        f"{key}.crop_max_scale",
        v.crop_min_scale <= v.crop_max_scale <= 1.0,
        f"in [{key}.crop_min_scale={v.crop_min_scale:g}, 1]",
        v.crop_max_scale,
    )
    _check(f"{key}.crop_pad", 0 <= v.crop_pad <= 16, "in [0, 16]", v.crop_pad)
    _check(
        f"{key}.crop_pad",
        not (v.crop_pad and v.resized_crop),
        "0 when the view uses a resized crop (one geometric op per view)",
        v.crop_pad,
    )
