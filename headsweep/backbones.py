"""Encoders f: inputs -> features h (the "pre-projection" representation). Features only: no
classifier, no head."""

from __future__ import annotations

from collections.abc import Callable

from torch import Tensor, nn

from headsweep.config import ModelConfig


class Backbone(nn.Module):
    """Wraps an encoder with the width of its output: forward (B, ...) -> (B, dim)."""

    def __init__(self, body: nn.Module, dim: int) -> None:
        super().__init__()
        self.body = body
        self.dim = dim

    def forward(self, x: Tensor) -> Tensor:
        return self.body(x)


def resnet18(cfg: ModelConfig, in_channels: int) -> Backbone:
    """torchvision's ResNet-18 with the CIFAR stem: 3x3 conv, stride 1, no max-pool, no fc.
    Stem padding is a field: 1 is the common choice, [O]'s code uses 2."""
    # Imported here: torchvision's package import pulls in torch._dynamo (~1 s on 2 cores),
    # which every process importing the trainables (the driver, each trial) would otherwise pay
    # even when no trial builds a ResNet.
    from torchvision.models import resnet18 as torchvision_resnet18

    net = torchvision_resnet18(weights=None)
    net.conv1 = nn.Conv2d(in_channels, 64, 3, stride=1, padding=cfg.stem_padding, bias=False)
    net.maxpool = nn.Identity()
    net.fc = nn.Identity()
    return Backbone(net, 512)


def small_cnn(cfg: ModelConfig, in_channels: int) -> Backbone:
    """Strided conv-BN-ReLU blocks (each halves the resolution) and global average pooling:
    ~4,400 images/s forward+backward on 2 CPU cores with widths (32, 64, 128)."""
    layers: list[nn.Module] = []
    width_in = in_channels
    for width in cfg.widths:
        layers += [
            nn.Conv2d(width_in, width, 3, stride=2, padding=1, bias=False),
            nn.BatchNorm2d(width),
            nn.ReLU(inplace=True),
        ]
        width_in = width
    layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten()]
    return Backbone(nn.Sequential(*layers), width_in)


GRID = 2  # grid_cnn: the final map is average-pooled to GRID x GRID cells, then flattened


def grid_cnn(cfg: ModelConfig, in_channels: int) -> Backbone:
    """A CNN that keeps where things are (docs/science.md §9): conv3x3-BN-ReLU stages, 1 per width,
    all but the last with stride 2, the last with stride 1; the final map is average-pooled to a
    2x2 grid and flattened, so d = 4 * widths[-1] (512 with the default (32, 64, 128, 128)).

    With four widths on 32x32 inputs the maps are 16, 8, 4, 4 and each of the 2x2 cells has a
    39-px receptive field that contains the whole centred 16-px digit (cell 0 spans input rows
    -15..23, cell 1 rows 1..39, before clipping to the image); `small_cnn` (15 px, global
    pooling) sees no whole digit and averages away its position."""
    layers: list[nn.Module] = []
    width_in = in_channels
    for i, width in enumerate(cfg.widths):
        stride = 1 if i == len(cfg.widths) - 1 else 2
        layers += [
            nn.Conv2d(width_in, width, 3, stride=stride, padding=1, bias=False),
            nn.BatchNorm2d(width),
            nn.ReLU(inplace=True),
        ]
        width_in = width
    layers += [nn.AdaptiveAvgPool2d(GRID), nn.Flatten()]
    return Backbone(nn.Sequential(*layers), GRID * GRID * width_in)


def mlp(cfg: ModelConfig, in_channels: int) -> Backbone:
    """Vector data: Linear-ReLU blocks of the given widths; `in_channels` is the input dim."""
    layers: list[nn.Module] = []
    width_in = in_channels
    for i, width in enumerate(cfg.widths):
        layers.append(nn.Linear(width_in, width))
        if i < len(cfg.widths) - 1:
            layers.append(nn.ReLU(inplace=True))
        width_in = width
    return Backbone(nn.Sequential(*layers), width_in)


BACKBONES: dict[str, Callable[[ModelConfig, int], Backbone]] = {
    "resnet18": resnet18,
    "small_cnn": small_cnn,
    "grid_cnn": grid_cnn,
    "mlp": mlp,
}


def build_backbone(cfg: ModelConfig, in_channels: int) -> Backbone:
    return BACKBONES[cfg.backbone](cfg, in_channels)


__all__ = ["BACKBONES", "Backbone", "build_backbone"]
