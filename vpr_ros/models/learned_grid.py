"""The trainable variant of the default: baseline's ImageNet trunk plus a learned 1x1 projection before the grid.

Same trunk and grid standardisation as ``baseline.GridCNNDescriptor``; a learned
Conv1x1 -> BatchNorm -> ReLU maps the trunk's channels to ``channels`` features per location
before they are averaged over the grid. Only the projection (and, when fine-tuned, the last
trunk blocks) differ from the shipped ImageNet weights, so a trained file stays small.
"""

from __future__ import annotations

import torch
from torch import nn

from vpr_ros.models.baseline import EfficientNetLite0Trunk, grid_standardise


class LearnedGridDescriptor(nn.Module):
    """[B,3,H,W] -> [B, channels*rows*cols], L2-normalised."""

    def __init__(self, num_blocks: int = 5, grid: tuple[int, int] = (8, 16), channels: int = 64):
        super().__init__()
        self.trunk = EfficientNetLite0Trunk(num_blocks)
        self.head = nn.Sequential(
            nn.Conv2d(self.trunk.out_channels, channels, kernel_size=1, bias=False),
            nn.BatchNorm2d(channels),
            nn.ReLU(),
        )
        self.grid = tuple(grid)
        self.dim = channels * self.grid[0] * self.grid[1]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return grid_standardise(self.head(self.trunk(x)), self.grid)
