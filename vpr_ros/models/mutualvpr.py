"""
MutualVPR (Gucci233/MutualVPR).

DINOv2-B with a multi-conv adapter in every block, GeM + Linear head.

Key names follow the official modules (``backbone.blocks.N.adapter.*``,
``aggregation.{1,3}.*``) so released checkpoints load strictly.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from vpr_ros.models.dinov2 import Block, DinoVisionTransformer, dinov2_vit
from vpr_ros.models.pooling import GeM, L2Norm

from vpr_ros.models.spec import ModelSpec

# The adapter output is added to the MLP output with this fixed weight.
ADAPTER_SCALE = 0.2


class ConvBnRelu(nn.Module):
    """Conv (with bias) -> BatchNorm(eps 1e-3) -> ReLU (official ``BasicConv2d``)."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(
            in_channels, out_channels, kernel_size, padding=kernel_size // 2, bias=True
        )
        self.bn = nn.BatchNorm2d(out_channels, eps=1e-3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.bn(self.conv(x)))


class MulConvAdapter(nn.Module):
    """
    Inception-like adapter on the patch grid.

    Widths derive from ``dim`` as (dim, dim/2, dim/4, dim/32, dim/8, dim/32, dim/8),
    which is the official hard-coded (768, 384, 192, 24, 96, 24, 96) at dim=768.
    Patch tokens must form a square grid (MutualVPR runs at 504x504).
    """

    def __init__(self, dim: int) -> None:
        super().__init__()
        hidden = dim // 2
        self.branch1 = ConvBnRelu(hidden, dim // 4, 1)
        self.branch2 = nn.Sequential(
            ConvBnRelu(hidden, dim // 32, 1), ConvBnRelu(dim // 32, dim // 8, 3)
        )
        self.branch3 = nn.Sequential(
            ConvBnRelu(hidden, dim // 32, 1), ConvBnRelu(dim // 32, dim // 8, 5)
        )
        self.D_fc1 = nn.Linear(dim, hidden)
        self.D_fc2 = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = F.relu(self.D_fc1(x))
        b, n, c = h.shape
        side = int(math.sqrt(n - 1))
        grid = h[:, 1:].reshape(b, side, side, c).permute(0, 3, 1, 2)
        convs = torch.cat([self.branch1(grid), self.branch2(grid), self.branch3(grid)], dim=1)
        patches = convs.reshape(b, c, side * side).transpose(1, 2)
        return self.D_fc2(torch.cat([h[:, :1], patches], dim=1) + h)


class AdapterBlock(Block):
    """
    DINOv2 block whose MLP branch also carries 0.2 * adapter(norm2(x)).

    Inside LayerScale ls2.
    """

    def __init__(self, dim: int, num_heads: int, mlp_ratio: float = 4.0) -> None:
        super().__init__(dim, num_heads, mlp_ratio)
        self.adapter = MulConvAdapter(dim)

    def ffn_residual(self, x: torch.Tensor) -> torch.Tensor:
        y = self.norm2(x)
        return self.ls2(self.mlp(y) + ADAPTER_SCALE * self.adapter(y))


def gem_linear_head(dim: int, out_dim: int) -> nn.Sequential:
    """
    L2 per location -> GeM -> Linear -> L2 on a [B, dim, h, w] map.

    Indices match the ``aggregation.*`` keys.
    """
    return nn.Sequential(L2Norm(1), GeM(p=3.0), nn.Flatten(1), nn.Linear(dim, out_dim), L2Norm(1))


class MutualVPR(nn.Module):
    def __init__(self, backbone: DinoVisionTransformer, out_dim: int = 512) -> None:
        super().__init__()
        self.backbone = backbone
        self.aggregation = gem_linear_head(backbone.embed_dim, out_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        grid_h, grid_w = self.backbone.grid(x)
        patches = self.backbone.forward_features(x)["x_norm_patchtokens"]
        feature_map = patches.reshape(patches.shape[0], grid_h, grid_w, -1).permute(0, 3, 1, 2)
        return self.aggregation(feature_map)


def mutualvpr_b() -> MutualVPR:
    return MutualVPR(dinov2_vit("vitb14", block=AdapterBlock), out_dim=512)


PRESETS = (
    ModelSpec(
        name="mutualvpr-b",
        family="MutualVPR",
        build=mutualvpr_b,
        input_size=(504, 504),
        dim=512,
        weights_source="https://github.com/Gucci233/MutualVPR",
        signature={
            "backbone.blocks.0.adapter.D_fc1.weight": (384, 768),
            "aggregation.3.weight": (512, 768),
        },
        description="MutualVPR: DINOv2-B with multi-conv adapters, GeM + Linear(768, 512)",
    ),
)
