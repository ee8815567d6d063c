"""Pooling layers shared by the VPR heads: GeM and L2 normalisation."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def gem(x: torch.Tensor, p: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """Generalised mean over the spatial dims of [B, C, H, W] -> [B, C, 1, 1]."""
    # A mean (not avg_pool2d with a shape-sized kernel) keeps ONNX export shape-agnostic.
    return x.clamp(min=eps).pow(p).mean(dim=(-2, -1), keepdim=True).pow(1.0 / p)


class GeM(nn.Module):
    """GeM with a learnable exponent ``p`` (CosPlace / MutualVPR layout: keeps [B, C, 1, 1])."""

    def __init__(self, p: float = 3.0, eps: float = 1e-6) -> None:
        super().__init__()
        self.p = nn.Parameter(torch.ones(1) * p)
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return gem(x, self.p, self.eps)


class GeMPool(GeM):
    """
    GeM that flattens and L2-normalises its output (SciceVPR's ``GeMPool``).

    [B, C, H, W] -> [B, C].
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.normalize(gem(x, self.p, self.eps).flatten(1), p=2.0, dim=1)


class L2Norm(nn.Module):
    def __init__(self, dim: int = 1) -> None:
        super().__init__()
        self.dim = dim

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.normalize(x, p=2.0, dim=self.dim)
