"""Encoders: output widths, and what the CPU-scale encoder `grid_cnn` sees (docs/science.md §9)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch

from headsweep.backbones import BACKBONES, build_backbone
from headsweep.config import ModelConfig

GRID_WIDTHS = (32, 64, 128, 128)


def cell_support(model: torch.nn.Module, cell: int, dim: int) -> torch.Tensor:
    """bool (32, 32): the input pixels with a non-zero gradient of the sum of one 2x2 cell's
    features (flatten order: channel-major, so cell k is features k, k + 4, ...), over a batch
    of random inputs in eval mode (no batch coupling through BatchNorm)."""
    x = torch.randn(8, 3, 32, 32, requires_grad=True, generator=torch.Generator().manual_seed(0))
    model.eval()
    out = model(x)
    assert out.shape == (8, dim)
    out[:, cell::4].sum().backward()
    return x.grad.abs().sum((0, 1)) > 0


def test_grid_cnn_width_and_shape():
    model = build_backbone(ModelConfig(backbone="grid_cnn", widths=GRID_WIDTHS), 3)
    assert "grid_cnn" in BACKBONES
    assert model.dim == 512  # 2 x 2 cells x 128 channels
    assert model(torch.randn(4, 3, 32, 32)).shape == (4, 512)


@pytest.mark.parametrize("cell", range(4))
def test_grid_cnn_every_cell_sees_the_whole_digit(cell):
    """Receptive field: for every one of the four output cells, the gradient of its features
    with respect to the input is non-zero over the whole centred 16x16 digit region (rows and
    columns 8..23), which needs a receptive field wider than the digit (39 px here); and a cell
    keeps where things are: the top-left cell does not see the bottom-right corner."""
    model = build_backbone(ModelConfig(backbone="grid_cnn", widths=GRID_WIDTHS), 3)
    support = cell_support(model, cell, model.dim)
    assert support[8:24, 8:24].all()
    if cell == 0:
        assert not support[24:, :].any() and not support[:, 24:].any()
        assert support[:24, :24].all()  # exactly its 39-px window clipped to the image


def test_small_cnn_sees_less_than_the_digit():
    """Why grid_cnn exists: small_cnn's units see 15x15 px (its final map is 4x4 before global
    pooling), less than the 16-px digit. Checked on the map before pooling."""
    model = build_backbone(ModelConfig(backbone="small_cnn", widths=(32, 64, 128)), 3)
    trunk = model.body[:-2]  # drop pool and flatten
    x = torch.randn(2, 3, 32, 32, requires_grad=True)
    trunk.eval()
    trunk(x)[:, :, 2, 2].sum().backward()
    rows = (x.grad.abs().sum((0, 1, 3)) > 0).nonzero().squeeze(1)
    assert rows.max() - rows.min() + 1 == 15


def test_the_trainables_load_torchvision_only_for_a_resnet():
    """torchvision's import pulls in torch._dynamo (~1 s on 2 cores): the driver and every
    trial process import the trainables, and only a ResNet trial needs it."""
    code = (
        "import sys, trainables.contrastive\n"
        "assert 'torchvision' not in sys.modules, 'imported with the trainables'\n"
        "from headsweep.backbones import build_backbone\n"
        "from headsweep.config import ModelConfig\n"
        "assert build_backbone(ModelConfig(backbone='resnet18'), 3).dim == 512\n"
        "assert 'torchvision' in sys.modules\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=Path(__file__).parents[1])
