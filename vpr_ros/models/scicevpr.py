"""
SciceVPR (shuimushan/SciceVPR).

Multi-layer DINOv2 maps -> token mixer -> 14 GeM regions -> encoder.

``SciceVPR`` is the student used at test time (each image on its own);
``SuperCricaVPR`` is its teacher, whose encoder attends across the images of a
batch (CricaVPR-style), so its descriptors depend on the batch.
Key names follow the official modules so released checkpoints load strictly.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from vpr_ros.models.dinov2 import DinoVisionTransformer, dinov2_vit
from vpr_ros.models.pooling import GeMPool

from vpr_ros.models.spec import ModelSpec

# The official token mixer hard-codes a 16x16 map, i.e. 224x224 input with patch 14.
MAP_SIDE = 16
# Region grid (row range, col range) in the official order: whole map, 2x2 split, 3x3 split.
_HALVES = ((0, 8), (8, 16))
_THIRDS = ((0, 5), (5, 11), (11, 16))
REGIONS: tuple[tuple[tuple[int, int], tuple[int, int]], ...] = (
    ((0, 16), (0, 16)),
    *((r, c) for r in _HALVES for c in _HALVES),
    *((r, c) for r in _THIRDS for c in _THIRDS),
)


class MultiLayerDinoV2(nn.Module):
    """
    Final-norm patch maps of selected DINOv2 blocks, concatenated on channels.

    [B, len(layers)*C, h, w].
    """

    def __init__(self, dino_model: DinoVisionTransformer, out_indices: list[int]) -> None:
        super().__init__()
        self.dino_model = dino_model
        self.out_indices = list(out_indices)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat(
            self.dino_model.get_intermediate_layers(x, n=self.out_indices, reshape=True), dim=1
        )


class TokenMixer(nn.Module):
    """
    x + MLP over the token axis of LayerNorm(x) (official ``Tokenmixen``).

    X is [B, C, tokens].
    """

    def __init__(
        self, channels: int, num_tokens: int = MAP_SIDE * MAP_SIDE, ratio: int = 1
    ) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(channels)
        self.mix = nn.Sequential(
            nn.Linear(num_tokens, num_tokens * ratio),
            nn.ReLU(),
            nn.Linear(num_tokens * ratio, num_tokens),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.mix(self.norm(x.transpose(1, 2)).transpose(1, 2))


class SciceVPR(nn.Module):
    """
    Student model.

    ``backbone=None`` leaves only the head (input: the [B, backbone_out_dim, 16, 16] map).
    """

    encoder_layers = 1

    def __init__(
        self,
        backbone: nn.Module | None,
        backbone_out_dim: int = 3072,
        mix_in_dim: int = 768,
        token_num: int = 2,
        token_ratio: int = 1,
    ) -> None:
        super().__init__()
        self.backbone = backbone if backbone is not None else nn.Identity()
        self.conv = nn.Conv2d(backbone_out_dim, mix_in_dim, kernel_size=1)
        self.tokenmix = nn.Sequential(
            *(TokenMixer(mix_in_dim, ratio=token_ratio) for _ in range(token_num))
        )
        self.gem = GeMPool(p=3.0)
        layer = nn.TransformerEncoderLayer(
            d_model=mix_in_dim,
            nhead=16,
            dim_feedforward=2048,
            dropout=0.1,
            activation="gelu",
            batch_first=False,
        )
        self.encoder = nn.TransformerEncoder(
            layer, num_layers=self.encoder_layers, enable_nested_tensor=False
        )

    def mix_tokens(self, maps: torch.Tensor) -> torch.Tensor:
        """[B, backbone_out_dim, 16, 16] -> mixed tokens [B, C, 256]."""
        return self.tokenmix(F.relu(self.conv(maps)).flatten(2))

    def pool_regions(self, tokens: torch.Tensor) -> torch.Tensor:
        """[B, C, 256] -> 14 L2-normalised GeM region vectors [B, 14, C]."""
        x = tokens.reshape(tokens.shape[0], tokens.shape[1], MAP_SIDE, MAP_SIDE)
        return torch.stack(
            [self.gem(x[:, :, r0:r1, c0:c1]) for (r0, r1), (c0, c1) in REGIONS], dim=1
        )

    def encode(self, regions: torch.Tensor) -> torch.Tensor:
        """
        Student.

        A length-1 sequence per region, so every region vector is transformed on its own.
        """
        b, n, c = regions.shape
        return self.encoder(regions.reshape(1, b * n, c)).reshape(b, n * c)

    def head(self, maps: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.encode(self.pool_regions(self.mix_tokens(maps))), p=2.0, dim=-1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.backbone(x))


class SuperCricaVPR(SciceVPR):
    """Teacher: two encoder layers whose sequence axis is the batch (cross-image attention)."""

    encoder_layers = 2

    def encode(self, regions: torch.Tensor) -> torch.Tensor:
        b, n, c = regions.shape
        return self.encoder(regions).reshape(b, n * c)


def _build(cls: type[SciceVPR], arch: str, out_indices: list[int]) -> SciceVPR:
    dino = dinov2_vit(arch)
    return cls(
        MultiLayerDinoV2(dino, out_indices),
        backbone_out_dim=dino.embed_dim * len(out_indices),
        mix_in_dim=dino.embed_dim,
    )


def scicevpr_b() -> SciceVPR:
    """README config: ViT-B/14, blocks 8-11, 3072 -> 768, two token mixers; 10752-D."""
    return _build(SciceVPR, "vitb14", [8, 9, 10, 11])


def scicevpr_l() -> SciceVPR:
    """ViT-L/14 analogue (no official L command): last four of 24 blocks, 4096 -> 1024; 14336-D."""
    return _build(SciceVPR, "vitl14", [20, 21, 22, 23])


def scicevpr_teacher_b() -> SuperCricaVPR:
    return _build(SuperCricaVPR, "vitb14", [8, 9, 10, 11])


WEIGHTS_SOURCE = "https://github.com/shuimushan/SciceVPR"
_STUDENT_KEYS = {"encoder.layers.0.norm1.weight": None, "tokenmix.0.mix.0.weight": (256, 256)}
PRESETS = (
    ModelSpec(
        name="scicevpr-b",
        family="SciceVPR",
        build=scicevpr_b,
        input_size=(224, 224),  # the token mixer is fixed to a 16x16 map
        dim=14 * 768,
        weights_source=WEIGHTS_SOURCE,
        signature={"conv.weight": (768, 3072, 1, 1), **_STUDENT_KEYS},
        description=(
            "SciceVPR student, DINOv2-B blocks 8-11 + token mixer + 14 GeM regions + encoder"
        ),
    ),
    ModelSpec(
        name="scicevpr-l",
        family="SciceVPR",
        build=scicevpr_l,
        input_size=(224, 224),
        dim=14 * 1024,
        weights_source=WEIGHTS_SOURCE,
        signature={"conv.weight": (1024, 4096, 1, 1), **_STUDENT_KEYS},
        description=(
            "SciceVPR student on DINOv2-L, blocks 20-23 (no official L config; analogue of the B"
            " one)"
        ),
    ),
    ModelSpec(
        name="scicevpr-teacher-b",
        family="SciceVPR",
        build=scicevpr_teacher_b,
        input_size=(224, 224),
        dim=14 * 768,
        weights_source=WEIGHTS_SOURCE,
        signature={
            "conv.weight": (768, 3072, 1, 1),
            **_STUDENT_KEYS,
            "encoder.layers.1.norm1.weight": None,
        },
        batch_independent=False,
        description=(
            "Super-CricaVPR teacher: attends across the batch, so descriptors depend on batch"
            " composition"
        ),
    ),
)
