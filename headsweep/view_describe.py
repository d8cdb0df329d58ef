"""One-line descriptions of a view's resolved pipeline (what `--dry-run` prints)."""

from __future__ import annotations

from headsweep.config import DataConfig, ViewConfig
from headsweep.data import STATS
from headsweep.view_ops import BLUR_KERNEL, SIGMA


def _num(v: float) -> str:
    return f"{v:g}"


def describe_view(view: ViewConfig, data: DataConfig | str | None = None) -> str:
    """One line: the resolved pipeline of a view, in the order `render` runs it, e.g.
    "RandomResizedCrop(scale=(0.08, 1), ratio=(3/4, 4/3), bicubic) -> HorizontalFlip p=0.5 ->
    ColorJitter(0.8, 0.8, 0.8, 0.2) p=0.8 -> Grayscale p=0.2 -> GaussianBlur(sigma 0.1-2,
    kernel 13) p=0.5 -> Normalize(cifar10)". Ops with probability 0 are left out."""

    def prob(q: float) -> str:
        return "" if q >= 1 else f" p={_num(q)}"

    steps = []
    if view.resized_crop:
        scale = f"({_num(view.crop_min_scale)}, {_num(view.crop_max_scale)})"
        steps.append(f"RandomResizedCrop(scale={scale}, ratio=(3/4, 4/3), bicubic)")
    elif view.crop_pad:
        steps.append(f"RandomCrop(padding={view.crop_pad})")
    if view.horizontal_flip_prob:
        steps.append("HorizontalFlip" + prob(view.horizontal_flip_prob))
    if view.color_jitter_prob and any(view.jitter):
        factors = ", ".join(_num(v) for v in view.jitter)
        steps.append(f"ColorJitter({factors})" + prob(view.color_jitter_prob))
    if view.gray_scale_prob:
        steps.append("Grayscale" + prob(view.gray_scale_prob))
    if view.gaussian_prob:
        blur = f"GaussianBlur(sigma {_num(SIGMA[0])}-{_num(SIGMA[1])}, kernel {BLUR_KERNEL})"
        steps.append(blur + prob(view.gaussian_prob))
    if view.solarization_prob:
        steps.append("Solarize(128/255)" + prob(view.solarization_prob))
    name = data.name if isinstance(data, DataConfig) else data
    stats_name = name if name in STATS else "cifar10"
    steps.append(f"Normalize({stats_name})")
    return " -> ".join(steps)
