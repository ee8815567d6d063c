"""
Trainer of the default model's trainable variant (``LearnedGridDescriptor``).

CPU-friendly, minutes.

The ImageNet EfficientNet-lite0 trunk comes from the shipped PyPI package and stays frozen
(BatchNorm statistics included) except its last ``trainable_blocks`` blocks; the 1x1 projection
learns with the multi-similarity loss and miner of the GSV-Cities recipe.
"""

from __future__ import annotations

import torch

from functools import partial
from pathlib import Path

from vpr_ros.models.checkpoints import read_state_dict
from vpr_ros.models.learned_grid import GRID, LearnedGridDescriptor
from vpr_ros.models.shipped import lite0_trunk_state_dict
from vpr_ros.models.spec import ModelSpec
from vpr_ros.training.base import MethodTrainer, freeze, trainable
from vpr_ros.training.losses import MultiSimilarity

INPUT_SIZE = (64, 128)  # as baseline: the 8x16 grid needs a feature map divisible by it


def learned_grid_spec(channels: int) -> ModelSpec:
    return ModelSpec(
        name="baseline-trainable",
        family="baseline",
        build=partial(LearnedGridDescriptor, num_blocks=5, grid=GRID, channels=channels),
        input_size=INPUT_SIZE,
        dim=channels * GRID[0] * GRID[1],
        mean=(0.5, 0.5, 0.5),
        std=(0.5, 0.5, 0.5),
    )


def build_learned_grid(channels: int) -> LearnedGridDescriptor:
    """Build the model with the ImageNet trunk in place and a fresh projection."""
    model = LearnedGridDescriptor(num_blocks=5, grid=GRID, channels=channels)
    model.trunk.load_state_dict(lite0_trunk_state_dict(model.trunk), strict=True)
    return model


class LearnedGridTrainer(MethodTrainer):
    method = "baseline-trainable"

    def __init__(
        self,
        model: LearnedGridDescriptor,
        spec: ModelSpec,
        device: torch.device,
        lr: float = 1e-3,
        trainable_blocks: int = 1,
    ) -> None:
        super().__init__(model, spec, device)
        freeze(model.trunk)
        tuned = (
            model.trunk._blocks[len(model.trunk._blocks) - trainable_blocks:]
            if trainable_blocks
            else []
        )
        for block in tuned:
            for p in block.parameters():
                p.requires_grad_(True)
        self.ms = MultiSimilarity()
        groups = [{"params": trainable(model.head), "lr": lr}]
        if tuned:
            groups.append({"params": [p for b in tuned for p in b.parameters()], "lr": lr * 0.1})
        self.optimizers["model"] = torch.optim.Adam(groups)

    def train_mode(self) -> None:
        self.model.train()
        self.model.trunk.eval()  # ImageNet BatchNorm statistics stay as shipped

    def loss(
        self, images: torch.Tensor, labels: torch.Tensor
    ) -> tuple[torch.Tensor, dict[str, float]]:
        loss = self.ms(self.model(images), labels)
        return loss, {}


def export_trained_tensors(checkpoint: Path, out: Path) -> dict[str, int]:
    """
    Write only the tensors that training changed (head, tuned blocks) of a checkpoint.

    The file the package ships.

    Returns {key: numel} of what was written.
    """
    trained = read_state_dict(checkpoint)
    channels = trained["head.0.weight"].shape[0]
    imagenet = build_learned_grid(channels).state_dict()
    changed = {
        k: v.clone()
        for k, v in trained.items()
        if k.startswith("head.") or not torch.equal(v, imagenet[k])
    }
    out.parent.mkdir(parents=True, exist_ok=True)
    torch.save(changed, out)
    return {k: v.numel() for k, v in changed.items()}
