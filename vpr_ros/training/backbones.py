"""
DINOv2 backbones for training.

The official sizes (with their pretrain weights) or a tiny one for proofs.

No trained DINOv2 weights ship with the package. Training a full-size model needs the bare
``dinov2_vit{s,b,l}14_pretrain.pth`` (facebookresearch/dinov2) through ``--backbone-weights``;
``--tiny WIDTHxDEPTH`` builds a small randomly initialised DINOv2 (head width 32) so that
learning can be shown on a CPU in minutes. A tiny model is for proofs and tests, not deployment:
no preset of the registry matches it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from torch import nn

from vpr_ros.errors import ConfigError, WeightsError
from vpr_ros.models.checkpoints import load_backbone_pretrain
from vpr_ros.models.dinov2 import Block, DinoVisionTransformer, dinov2_vit

DINOV2_SOURCE = "https://github.com/facebookresearch/dinov2 (dinov2_vitb14_pretrain.pth etc.)"


@dataclass(frozen=True)
class TinyBackbone:
    width: int
    depth: int

    @property
    def heads(self) -> int:
        return max(1, self.width // 32)


def parse_tiny(text: str) -> TinyBackbone:
    match = re.fullmatch(r"(\d+)x(\d+)", text.strip())
    if not match or int(match[1]) % 32 or int(match[2]) < 1:
        raise ConfigError(
            f"--tiny {text!r}: expected WIDTHxDEPTH with WIDTH a multiple of 32 and DEPTH >= 1, "
            "e.g. 64x4"
        )
    return TinyBackbone(int(match[1]), int(match[2]))


def dinov2_backbone(arch: str | TinyBackbone, block: type[Block] = Block) -> DinoVisionTransformer:
    if isinstance(arch, TinyBackbone):
        return DinoVisionTransformer(arch.width, arch.depth, arch.heads, block=block)
    return dinov2_vit(arch, block=block)


def require_backbone_weights(
    method: str, tiny: bool, backbone_weights: Path | None, allowed_without: bool
) -> None:
    """Refuse, before anything is built, to train a full-size DINOv2 model from noise."""
    if not (backbone_weights or tiny or allowed_without):
        raise WeightsError(
            f"training {method} starts from DINOv2's pretrained weights and none were given: "
            "download the bare "
            f"pretrain file from {DINOV2_SOURCE} and pass it with --backbone-weights, or "
            "fine-tune a checkpoint "
            "with --init-weights (--random-init trains from random weights: only for tests)"
        )


def put_backbone_weights(model: nn.Module, backbone_weights: Path | None) -> None:
    if backbone_weights:
        load_backbone_pretrain(model, backbone_weights)
