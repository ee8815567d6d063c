"""
The naive reference descriptor: the downsampled image's raw pixels.

Not for use: it is the yardstick the demo and benchmarks report beside the
default, to show how much the route's appearance change costs a naive method.
"""

import torch
from torch import nn
from torch.nn import functional as F

from vpr_ros.models.spec import ModelSpec


class RawPixels(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.normalize(x.flatten(1), dim=1)


def raw_pixels() -> RawPixels:
    return RawPixels()


PRESETS = (
    ModelSpec(
        name="raw-pixels",
        family="raw pixels",
        build=raw_pixels,
        input_size=(24, 32),
        dim=3 * 24 * 32,
        mean=(0.0, 0.0, 0.0),
        std=(1.0, 1.0, 1.0),
        description="naive yardstick: 32x24 RGB pixels, flattened and L2-normalised",
    ),
)
