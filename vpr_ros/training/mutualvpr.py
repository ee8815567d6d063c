"""
MutualVPR trainer (Gucci233/MutualVPR, CosPlace-style classification with view classes).

Places play the role of the official 10 m UTM cells. Cells are split into ``groups`` (cell i in
group i mod groups; along a route that keeps neighbours apart) and one group trains per epoch,
cycling. Each cell holds ``min(view_classes, images)`` classes. At the start of an epoch a random
fifth of the group's cells is re-clustered with faiss K-means on the current descriptors (at the
model's input size), and the new split is applied only if no cluster is empty. Classes are
learned with CosFace (s=60, m=0.5, pytorch-metric-learning), one classifier per group. Only the
convolutional adapters of every block and the GeM + linear head train: Adam 1e-5 (model) and
1e-2 (classifiers), cosine schedule over 50 epochs, mixed precision on CUDA.

Differences from the official code: classes start as a round-robin split of each cell's images
(the official initial split uses the panorama heading, which bags and folders do not have), and
K-means is faiss's (10 restarts, as sklearn's n_init=10) rather than sklearn's.
"""

from __future__ import annotations

from typing import Any

import faiss
import numpy as np
import torch
from pytorch_metric_learning.losses import CosFaceLoss
from torch import nn

from vpr_ros.models.dinov2 import DinoVisionTransformer
from vpr_ros.models.mutualvpr import AdapterBlock, MutualVPR
from vpr_ros.models.spec import ModelSpec
from vpr_ros.training.backbones import TinyBackbone, dinov2_backbone
from vpr_ros.training.base import DataConfig, MethodTrainer
from vpr_ros.training.checkpoint import dataparallel_state_dict
from vpr_ros.training.datasets import PlaceSet
from vpr_ros.training.sampling import PlaceBatchDataset
from vpr_ros.training.validation import describe

MODEL_LR = 1e-5
CLASSIFIER_LR = 1e-2
COSINE_EPOCHS = 50
RECLUSTER_FRACTION = 5  # one cell in five per epoch
KMEANS_RESTARTS = 10


def build_mutualvpr(arch: str | TinyBackbone, out_dim: int = 512) -> MutualVPR:
    return MutualVPR(dinov2_backbone(arch, block=AdapterBlock), out_dim=out_dim)


def init_adapters(backbone: DinoVisionTransformer) -> None:
    """
    Official start.

    The adapters' output layer at 0 and their convolutions at 1e-5, so training starts from DINOv2.
    """
    for name, module in backbone.named_modules():
        if ".adapter" not in name and not name.endswith("adapter"):
            continue
        if name.endswith("D_fc2"):
            nn.init.zeros_(module.weight)
            nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Conv2d):
            nn.init.constant_(module.weight, 1e-5)
            nn.init.constant_(module.bias, 1e-5)


def mutualvpr_spec(model: MutualVPR, input_size: tuple[int, int]) -> ModelSpec:
    return ModelSpec(
        name="mutualvpr",
        family="MutualVPR",
        build=lambda: model,
        input_size=input_size,
        dim=model.aggregation[3].out_features,
    )


class ViewClasses:
    """Classes of each cell of one group: lists of image indices."""

    def __init__(self, places: PlaceSet, cells: np.ndarray, per_cell: int) -> None:
        self.cells = cells
        self.classes: list[list[np.ndarray]] = []
        for cell in cells:
            members = places.places[cell]
            k = max(1, min(per_cell, len(members)))
            self.classes.append([members[i::k] for i in range(k)])

    def flat(self) -> list[np.ndarray]:
        return [c for cell in self.classes for c in cell]

    def recluster(
        self, position: int, descriptors: np.ndarray, members: np.ndarray, seed: int
    ) -> bool:
        k = len(self.classes[position])
        if k < 2:
            return False
        kmeans = faiss.Kmeans(
            descriptors.shape[1],
            k,
            niter=20,
            nredo=KMEANS_RESTARTS,
            seed=seed,
            min_points_per_centroid=1,
        )
        kmeans.train(np.ascontiguousarray(descriptors, dtype=np.float32))
        labels = kmeans.index.search(np.ascontiguousarray(descriptors, dtype=np.float32), 1)[1][
            :, 0
        ]
        if (
            len(set(labels.tolist())) < k
        ):  # an empty cluster: keep the previous split, as the official code does
            return False
        self.classes[position] = [members[labels == c] for c in range(k)]
        return True


class MutualVPRTrainer(MethodTrainer):
    method = "mutualvpr"
    layout = "cosplace"

    def __init__(
        self,
        model: MutualVPR,
        spec: ModelSpec,
        device: torch.device,
        train: PlaceSet,
        groups: int = 1,
        view_classes: int = 6,
        batch_size: int = 32,
        model_lr: float = MODEL_LR,
        classifier_lr: float = CLASSIFIER_LR,
        seed: int = 0,
    ) -> None:
        super().__init__(model, spec, device)
        for name, p in model.backbone.named_parameters():
            p.requires_grad_(".adapter." in name)
        self.seed, self.batch_size = seed, batch_size
        n_groups = max(1, min(groups, len(train)))
        self.groups = [
            ViewClasses(train, np.arange(g, len(train), n_groups), view_classes)
            for g in range(n_groups)
        ]
        self.classifiers = [
            CosFaceLoss(len(g.flat()), spec.dim, margin=0.5, scale=60).to(device)
            for g in self.groups
        ]
        self.classifier_optimizers = [
            torch.optim.Adam(c.parameters(), lr=classifier_lr) for c in self.classifiers
        ]
        self.model_optimizer = torch.optim.Adam(
            [p for p in model.parameters() if p.requires_grad], lr=model_lr
        )
        self.optimizers["model"] = self.model_optimizer
        self.epoch_schedulers["lr"] = torch.optim.lr_scheduler.CosineAnnealingLR(
            self.model_optimizer, T_max=COSINE_EPOCHS
        )
        self.group = 0
        self.reclustered = 0

    def start_epoch(self, epoch: int, train: PlaceSet) -> None:
        self.group = epoch % len(self.groups)
        # Only the active group's classifier steps (a GradScaler refuses optimisers without
        # gradients).
        self.optimizers = {
            "model": self.model_optimizer,
            "classifier": self.classifier_optimizers[self.group],
        }
        group = self.groups[self.group]
        rng = np.random.default_rng([self.seed, epoch, 2])
        chosen = rng.choice(
            len(group.cells), max(1, len(group.cells) // RECLUSTER_FRACTION), replace=False
        )
        self.reclustered = 0
        for position in chosen:
            if len(group.classes[position]) < 2:
                continue
            members = np.concatenate(group.classes[position])
            descriptors = describe(self.model, train, members, self.spec, self.device)
            self.reclustered += group.recluster(
                position, descriptors, members, seed=int(rng.integers(2**31))
            )

    def epoch_data(self, epoch: int, train: PlaceSet, data: DataConfig) -> PlaceBatchDataset:
        """Sample as CosPlace does: each image from a random class of the group."""
        classes = self.groups[self.group].flat()
        rng = np.random.default_rng([data.seed, epoch, 3])
        steps = data.steps_per_epoch or max(1, len(classes) // self.batch_size)
        labels = [rng.integers(0, len(classes), self.batch_size) for _ in range(steps)]
        batches = [np.array([rng.choice(classes[c]) for c in row]) for row in labels]
        return PlaceBatchDataset(train, batches, self.spec, data.seed, epoch, labels=labels)

    def loss(
        self, images: torch.Tensor, labels: torch.Tensor
    ) -> tuple[torch.Tensor, dict[str, float]]:
        descriptors = self.model(images)
        return self.classifiers[self.group](descriptors.float(), labels), {}

    def extra_state(self) -> dict[str, Any]:
        return {
            "classes": [[[c.tolist() for c in cell] for cell in g.classes] for g in self.groups],
            "classifiers": [c.state_dict() for c in self.classifiers],
            "classifier_optimizers": [o.state_dict() for o in self.classifier_optimizers],
        }

    def load_extra_state(self, state: dict[str, Any]) -> None:
        for g, cells in zip(self.groups, state["classes"]):
            g.classes = [[np.array(c, dtype=np.int64) for c in cell] for cell in cells]
        for c, s in zip(self.classifiers, state["classifiers"]):
            c.load_state_dict(s)
        for o, s in zip(self.classifier_optimizers, state["classifier_optimizers"]):
            o.load_state_dict(s)

    def state(self) -> dict[str, Any]:
        self.optimizers = {
            "model": self.model_optimizer
        }  # classifier optimisers are saved in extra_state
        return super().state()

    def official_checkpoint(
        self, epoch: int, recalls: list[float], best: float, not_improved: int
    ) -> dict[str, Any]:
        return {
            "epoch_num": epoch + 1,
            "model_state_dict": dataparallel_state_dict(self.model),
            "optimizer_state_dict": self.model_optimizer.state_dict(),
            "classifiers_state_dict": [c.state_dict() for c in self.classifiers],
            "optimizers_state_dict": [o.state_dict() for o in self.classifier_optimizers],
            "best_val_recall1": best,
        }

    def best_checkpoint(self, checkpoint: dict[str, Any]) -> dict[str, Any]:
        return checkpoint[
            "model_state_dict"
        ]  # train.py's best_model.pth: the bare (DataParallel) state_dict
