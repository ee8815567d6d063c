"""
DINOv2 ViT/14 (facebookresearch/dinov2) in plain torch, under the official state_dict key names.

The official ``*_pretrain.pth`` files load strictly into ``DinoVisionTransformer``.
Only the inference path is here (no masking, no stochastic depth, no registers).
"""

from __future__ import annotations

import math
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from vpr_ros.models.spec import ModelSpec

PATCH_SIZE = 14
# The hub models were trained at 518 px: a 37x37 learned position grid.
PRETRAIN_GRID = 37
# DINOv2 resizes the position grid with a small offset on the scale factor (see
# interpolate_pos_embed).
POS_EMBED_OFFSET = 0.1


class PatchEmbed(nn.Module):
    def __init__(self, embed_dim: int, patch_size: int = PATCH_SIZE) -> None:
        super().__init__()
        self.proj = nn.Conv2d(3, embed_dim, kernel_size=patch_size, stride=patch_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(x).flatten(2).transpose(1, 2)  # [B, N, C]


class Attention(nn.Module):
    def __init__(self, dim: int, num_heads: int) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.scale = (dim // num_heads) ** -0.5
        self.qkv = nn.Linear(dim, dim * 3, bias=True)
        self.proj = nn.Linear(dim, dim, bias=True)

    def _qkv(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        b, n, c = x.shape
        qkv = (
            self.qkv(x)
            .reshape(b, n, 3, self.num_heads, c // self.num_heads)
            .permute(2, 0, 3, 1, 4)
        )
        return qkv[0], qkv[1], qkv[2]  # each [B, heads, N, head_dim]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, c = x.shape
        q, k, v = self._qkv(x)
        x = F.scaled_dot_product_attention(q, k, v)
        return self.proj(x.transpose(1, 2).reshape(b, n, c))

    def cls_attention(self, x: torch.Tensor) -> torch.Tensor:
        """Softmax attention of the CLS query over all tokens, per head: [B, heads, N]."""
        q, k, _ = self._qkv(x)
        return (q[:, :, :1] @ k.transpose(-2, -1) * self.scale).softmax(dim=-1)[:, :, 0]


class LayerScale(nn.Module):
    def __init__(self, dim: int, init_values: float = 1.0) -> None:
        super().__init__()
        self.gamma = nn.Parameter(init_values * torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.gamma


class Mlp(nn.Module):
    def __init__(self, dim: int, hidden_dim: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden_dim)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden_dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(x)))


class Block(nn.Module):
    """Pre-norm transformer block with LayerScale (eval path of DINOv2's NestedTensorBlock)."""

    def __init__(self, dim: int, num_heads: int, mlp_ratio: float = 4.0) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=1e-6)
        self.attn = Attention(dim, num_heads)
        self.ls1 = LayerScale(dim)
        self.norm2 = nn.LayerNorm(dim, eps=1e-6)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))
        self.ls2 = LayerScale(dim)

    def attn_residual(self, x: torch.Tensor) -> torch.Tensor:
        return self.ls1(self.attn(self.norm1(x)))

    def ffn_residual(self, x: torch.Tensor) -> torch.Tensor:
        return self.ls2(self.mlp(self.norm2(x)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn_residual(x)
        return x + self.ffn_residual(x)


def interpolate_pos_embed(pos_embed: torch.Tensor, grid_h: int, grid_w: int) -> torch.Tensor:
    """
    Resize a [1, 1 + M*M, C] position table to a grid_h x grid_w patch grid, CLS entry kept.

    Same as DINOv2: bicubic, no antialias, driven by ``scale_factor=(g + 0.1) / M``
    (not by the output size), in float32.
    """
    num_patches = pos_embed.shape[1] - 1
    if num_patches == grid_h * grid_w and grid_h == grid_w:
        return pos_embed
    dtype = pos_embed.dtype
    pos_embed = pos_embed.float()
    side = int(math.sqrt(num_patches))
    dim = pos_embed.shape[-1]
    patch_pos = pos_embed[:, 1:].reshape(1, side, side, dim).permute(0, 3, 1, 2)
    patch_pos = F.interpolate(
        patch_pos,
        scale_factor=((grid_h + POS_EMBED_OFFSET) / side, (grid_w + POS_EMBED_OFFSET) / side),
        mode="bicubic",
        antialias=False,
    )
    patch_pos = patch_pos.permute(0, 2, 3, 1).reshape(1, -1, dim)
    return torch.cat((pos_embed[:, :1], patch_pos), dim=1).to(dtype)


class DinoVisionTransformer(nn.Module):
    """DINOv2 ViT with patch 14; ``block`` lets variants (MutualVPR) swap in their own Block."""

    def __init__(
        self,
        embed_dim: int,
        depth: int,
        num_heads: int,
        mlp_ratio: float = 4.0,
        block: type[Block] = Block,
    ) -> None:
        super().__init__()
        self.embed_dim = embed_dim
        self.patch_size = PATCH_SIZE
        self.cls_token = nn.Parameter(torch.zeros(1, 1, embed_dim))
        self.pos_embed = nn.Parameter(torch.zeros(1, 1 + PRETRAIN_GRID**2, embed_dim))
        # training only; kept for the key layout
        self.mask_token = nn.Parameter(torch.zeros(1, embed_dim))
        self.patch_embed = PatchEmbed(embed_dim)
        self.blocks = nn.ModuleList(block(embed_dim, num_heads, mlp_ratio) for _ in range(depth))
        self.norm = nn.LayerNorm(embed_dim, eps=1e-6)
        nn.init.trunc_normal_(self.pos_embed, std=0.02)
        nn.init.normal_(self.cls_token, std=1e-6)

    def grid(self, x: torch.Tensor) -> tuple[int, int]:
        """
        Return the patch grid, (rows, cols), of an image batch [B, 3, H, W].

        Plain ints even under ONNX tracing: the image size is fixed per export.
        """
        return int(x.shape[-2]) // self.patch_size, int(x.shape[-1]) // self.patch_size

    def prepare_tokens(self, x: torch.Tensor) -> torch.Tensor:
        grid_h, grid_w = self.grid(x)
        tokens = self.patch_embed(x)
        tokens = torch.cat((self.cls_token.expand(tokens.shape[0], -1, -1), tokens), dim=1)
        return tokens + interpolate_pos_embed(self.pos_embed, grid_h, grid_w)

    def forward_features(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        tokens = self.prepare_tokens(x)
        for blk in self.blocks:
            tokens = blk(tokens)
        normed = self.norm(tokens)
        return {
            "x_norm_clstoken": normed[:, 0],
            "x_norm_patchtokens": normed[:, 1:],
            "x_prenorm": tokens,
        }

    def get_intermediate_layers(
        self,
        x: torch.Tensor,
        n: int | Sequence[int] = 1,
        reshape: bool = False,
        return_class_token: bool = False,
        norm: bool = True,
    ) -> tuple:
        """Return the outputs of the last ``n`` blocks (int) or of the 0-based blocks in ``n``."""
        depth = len(self.blocks)
        wanted = set(range(depth - n, depth)) if isinstance(n, int) else set(n)
        grid_h, grid_w = self.grid(x)
        tokens = self.prepare_tokens(x)
        outputs = []
        for i, blk in enumerate(self.blocks[: max(wanted) + 1]):
            tokens = blk(tokens)
            if i in wanted:
                outputs.append(self.norm(tokens) if norm else tokens)
        class_tokens = [out[:, 0] for out in outputs]
        patches = [out[:, 1:] for out in outputs]
        if reshape:
            patches = [
                p.reshape(p.shape[0], grid_h, grid_w, -1).permute(0, 3, 1, 2).contiguous()
                for p in patches
            ]
        if return_class_token:
            return tuple(zip(patches, class_tokens))
        return tuple(patches)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Final-norm CLS token [B, C] (the hub model's forward; its head is Identity)."""
        return self.forward_features(x)["x_norm_clstoken"]


class DinoV2ClsDescriptor(DinoVisionTransformer):
    """Plain DINOv2 as a place descriptor: the L2-normalised CLS token (keys as the hub model)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.normalize(super().forward(x), p=2.0, dim=-1)


# (embed_dim, depth, num_heads) of the hub models.
VIT_CONFIGS: dict[str, tuple[int, int, int]] = {
    "vits14": (384, 12, 6),
    "vitb14": (768, 12, 12),
    "vitl14": (1024, 24, 16),
}


def dinov2_vit(arch: str, block: type[Block] = Block) -> DinoVisionTransformer:
    """
    Build a bare DINOv2 backbone of an architecture such as ``"vitb14"``.

    Loads ``dinov2_vitb14_pretrain.pth`` strictly.
    """
    embed_dim, depth, num_heads = VIT_CONFIGS[arch]
    return DinoVisionTransformer(embed_dim, depth, num_heads, block=block)


def _descriptor(arch: str) -> DinoV2ClsDescriptor:
    embed_dim, depth, num_heads = VIT_CONFIGS[arch]
    return DinoV2ClsDescriptor(embed_dim, depth, num_heads)


def dinov2_s() -> DinoV2ClsDescriptor:
    return _descriptor("vits14")


def dinov2_b() -> DinoV2ClsDescriptor:
    return _descriptor("vitb14")


def dinov2_l() -> DinoV2ClsDescriptor:
    return _descriptor("vitl14")


WEIGHTS_SOURCE = "https://github.com/facebookresearch/dinov2"
PRESETS = tuple(
    ModelSpec(
        name=f"dinov2-{size}",
        family="DINOv2",
        build=build,
        input_size=(224, 224),
        dim=VIT_CONFIGS[arch][0],
        weights_source=WEIGHTS_SOURCE,
        # A bare hub pretrain; for a VPR model's backbone use checkpoints.load_backbone_pretrain.
        signature={"cls_token": (1, 1, VIT_CONFIGS[arch][0]), "blocks.0.attn.qkv.weight": None},
        description=(
            f"DINOv2 ViT-{size.upper()}/14, L2-normalised CLS token (dinov2_{arch}_pretrain.pth)"
        ),
    ) for size, arch, build in (
        ("s", "vits14", dinov2_s),
        ("b", "vitb14", dinov2_b),
        ("l", "vitl14", dinov2_l),
    )
)
