"""The augmentation sections of a trial config: one view's pipeline (`ViewConfig`, solo-learn's
field names) and the two-view setup (`AugConfig`) with its named recipe. Imported through
`headsweep.config` like every other section."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from headsweep.configtree import check, choice
from headsweep.presets import DEFAULT_RECIPE, VIEW_RECIPES


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

    def validate(self, prefix: str) -> None:
        for name in (
            "color_jitter_prob",
            "gray_scale_prob",
            "gaussian_prob",
            "solarization_prob",
            "horizontal_flip_prob",
        ):
            value = getattr(self, name)
            check(f"{prefix}{name}", 0.0 <= value <= 1.0, "a probability in [0, 1]", value)
        for name in ("brightness", "contrast", "saturation"):
            value = getattr(self, name)
            check(f"{prefix}{name}", 0.0 <= value < math.inf, ">= 0 and finite", value)
        check(f"{prefix}hue", 0.0 <= self.hue <= 0.5, "in [0, 0.5]", self.hue)
        low, high = self.crop_min_scale, self.crop_max_scale
        check(f"{prefix}crop_min_scale", 0.0 < low <= 1.0, "in (0, 1]", low)
        check(
            f"{prefix}crop_max_scale",
            low <= high <= 1.0,
            f"in [{prefix}crop_min_scale={low:g}, 1]",
            high,
        )
        check(f"{prefix}crop_pad", 0 <= self.crop_pad <= 16, "in [0, 16]", self.crop_pad)
        check(
            f"{prefix}crop_pad",
            not (self.crop_pad and self.resized_crop),
            "0 when the view uses a resized crop (one geometric op per view)",
            self.crop_pad,
        )


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

    @staticmethod
    def expand(values: dict[str, Any], prefix: str) -> dict[str, Any]:
        """The recipe's per-view settings under the spec's own view1/view2 keys."""
        recipe = values.get("recipe", DEFAULT_RECIPE)
        choice(f"{prefix}recipe", recipe, VIEW_RECIPES)
        out = dict(values)
        for view in ("view1", "view2"):
            given = values.get(view, {})
            if not isinstance(given, Mapping):
                raise ValueError(f"{prefix}{view}: expected a mapping, got {given!r}")
            out[view] = {**VIEW_RECIPES[recipe][view], **given}
        return out

    def validate(self, features: int, prefix: str = "aug.") -> None:
        """`features`: K = len(data.phi), the vector data's feature count."""
        check(f"{prefix}p_drop", 0.0 <= self.p_drop <= 1.0, "in [0, 1]", self.p_drop)
        for i, view in enumerate(self.views, 1):
            view.validate(f"{prefix}view{i}.")
        drop = self.feature_drop
        check(
            f"{prefix}feature_drop",
            len(drop) in (0, features) and all(0 <= v <= 1 for v in drop),
            f"empty or {features} probabilities in [0, 1]",
            drop,
        )
        check(
            f"{prefix}sign_flip",
            all(0 <= j < features for j in self.sign_flip),
            f"feature indices in [0, {features})",
            self.sign_flip,
        )
