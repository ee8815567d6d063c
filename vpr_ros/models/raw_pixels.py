"""The naive reference descriptor: the downsampled image's raw pixels.

Not for use: it is the yardstick the demo and benchmarks report beside the
default, to show how much the route's appearance change costs a naive method.
"""

import torch
from torch import nn
from torch.nn import functional as F


class RawPixels(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.normalize(x.flatten(1), dim=1)


def raw_pixels() -> RawPixels:
    return RawPixels()
