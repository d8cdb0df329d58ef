"""Named presets as data: head shapes and augmentation recipes from the papers' code
(docs/science.md §1 and §8). A preset fills the fields a spec leaves out; explicit keys win.
Pure data, no torch: the config module applies them while building a `TrialConfig`."""

from __future__ import annotations

from typing import Any

# MLP-head shapes; hidden/out are absolute widths.
HEAD_PRESETS: dict[str, dict[str, Any]] = {
    # SimCLR / [O] CIFAR projector: 512 -> 2048 -> 256, no BN.
    "simclr": {"hidden": 2048, "out": 256, "depth": 2, "batch_norm": False, "last_bn": False},
    # SAS critic used by [X]: 512 -> 512 -> BN -> ReLU -> 128 -> BN(affine=False), no biases.
    "sas": {
        "hidden": 512,
        "out": 128,
        "depth": 2,
        "batch_norm": True,
        "last_bn": True,
        "bias": False,
    },
    # Barlow Twins projector: 512 -> 2048 -> BN -> ReLU -> 2048 -> BN -> ReLU -> 2048.
    "barlow": {"hidden": 2048, "out": 2048, "depth": 3, "batch_norm": True, "last_bn": False},
}

# One view's pipeline with solo-learn's field names (its augmentation yaml files), applied in
# [O]'s order: resized crop -> colour jitter -> grayscale -> blur -> solarize -> flip.
# crop_min_scale = crop_max_scale = 1 means no resized crop; crop_pad is the pad-and-crop shift.
_SAS_VIEW: dict[str, Any] = {
    "crop_min_scale": 1.0,
    "crop_max_scale": 1.0,
    "crop_pad": 0,
    "brightness": 0.4,
    "contrast": 0.4,
    "saturation": 0.4,
    "hue": 0.1,
    "color_jitter_prob": 0.8,
    "gray_scale_prob": 0.2,
    "gaussian_prob": 0.0,
    "solarization_prob": 0.0,
    "horizontal_flip_prob": 0.5,
}
# [O]'s SimCLR CIFAR views (solo-learn scripts/pretrain/cifar/simclr.yaml): symmetric.
_SIMCLR_VIEW = {
    **_SAS_VIEW,
    "crop_min_scale": 0.08,
    "brightness": 0.8,
    "contrast": 0.8,
    "saturation": 0.8,
    "hue": 0.2,
    "gaussian_prob": 0.5,
}
# [O]'s Barlow Twins CIFAR views (solo-learn scripts/pretrain/cifar/barlow.yaml): asymmetric,
# only the second view solarizes.
_BARLOW_VIEW = {**_SAS_VIEW, "crop_min_scale": 0.08, "saturation": 0.2}

# recipe name -> view1, view2 and the forward mode its code uses ("per_view": each view through
# encoder and head separately, so BatchNorm statistics are per view, as solo-learn does).
VIEW_RECIPES: dict[str, dict[str, Any]] = {
    # [X]/SAS MNIST-on-CIFAR views: no resized crop (it would move or cut the digit).
    "sas_digits": {"view1": _SAS_VIEW, "view2": _SAS_VIEW, "forward": "joint"},
    "simclr_cifar": {"view1": _SIMCLR_VIEW, "view2": _SIMCLR_VIEW, "forward": "per_view"},
    "barlow_cifar": {
        "view1": _BARLOW_VIEW,
        "view2": {**_BARLOW_VIEW, "solarization_prob": 0.2},
        "forward": "per_view",
    },
    # SupContrast's CIFAR recipe (HobbitLong/SupContrast main_supcon.py): resized crop at scale
    # (0.2, 1), flip, jitter (0.4, 0.4, 0.4, 0.1) p 0.8, grayscale 0.2; both views in one batch.
    "supcon_cifar": {
        "view1": {**_SAS_VIEW, "crop_min_scale": 0.2},
        "view2": {**_SAS_VIEW, "crop_min_scale": 0.2},
        "forward": "joint",
    },
}

DEFAULT_RECIPE = "sas_digits"
