"""What every method's trainer provides to the loop, and the parts they share (AMP step, state)."""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from vpr_ros.models.spec import ModelSpec
from vpr_ros.training.checkpoint import dataparallel_state_dict
from vpr_ros.training.datasets import PlaceSet
from vpr_ros.training.sampling import PlaceBatchDataset, epoch_batches


@dataclass
class DataConfig:
    places_per_batch: int
    images_per_place: int
    steps_per_epoch: int | None  # None: every training place once per epoch
    seed: int


class MethodTrainer(ABC):
    """
    One method's model, optimisers and loss. The loop owns data, validation and checkpoints.

    ``model`` is the module that is validated and saved (the deployable descriptor).
    Schedulers in ``epoch_schedulers`` step after each epoch, those in ``step_schedulers`` after
    each batch.
    """

    method: str
    layout = "gsv"  # checkpoint layout, see checkpoint.py

    def __init__(self, model: nn.Module, spec: ModelSpec, device: torch.device) -> None:
        self.model = model.to(device)
        self.spec = spec
        self.device = device
        self.amp = device.type == "cuda"
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.amp)
        self.optimizers: dict[str, torch.optim.Optimizer] = {}
        self.epoch_schedulers: dict[str, Any] = {}
        self.step_schedulers: dict[str, Any] = {}

    # --- per method ---
    @abstractmethod
    def loss(
        self, images: torch.Tensor, labels: torch.Tensor
    ) -> tuple[torch.Tensor, dict[str, float]]:
        """Total loss and its named terms (floats, for the progress bar and history)."""

    def train_mode(self) -> None:
        """Put modules in train/eval mode for a training epoch (frozen parts stay in eval)."""
        self.model.train()

    def start_epoch(self, epoch: int, train: PlaceSet) -> None:
        """Per-epoch work before batches are drawn (e.g. MutualVPR's re-clustering)."""

    def epoch_data(self, epoch: int, train: PlaceSet, data: DataConfig) -> PlaceBatchDataset:
        batches = epoch_batches(
            train,
            data.places_per_batch,
            data.images_per_place,
            data.seed,
            epoch,
            data.steps_per_epoch,
        )
        return PlaceBatchDataset(train, batches, self.spec, data.seed, epoch)

    def extra_state(self) -> dict[str, Any]:
        return {}

    def load_extra_state(self, state: dict[str, Any]) -> None:
        pass

    def official_checkpoint(
        self, epoch: int, recalls: list[float], best: float, not_improved: int
    ) -> dict[str, Any]:
        """Return the authors' checkpoint dict (gsv layout by default)."""
        return {
            "epoch_num": epoch,
            "model_state_dict": dataparallel_state_dict(self.model),
            "optimizer_state_dict": next(iter(self.optimizers.values())).state_dict(),
            "recalls": recalls,
            "best_r5": best,
            "not_improved_num": not_improved,
        }

    def best_checkpoint(self, checkpoint: dict[str, Any]) -> dict[str, Any]:
        """Return what best_model.pth holds (the gsv layout saves the whole checkpoint there)."""
        return checkpoint

    # --- shared ---
    def step(self, images: torch.Tensor, labels: torch.Tensor) -> dict[str, float]:
        for opt in self.optimizers.values():
            opt.zero_grad(set_to_none=True)
        with torch.autocast(self.device.type, dtype=torch.float16, enabled=self.amp):
            total, terms = self.loss(images, labels)
        self.scaler.scale(total).backward()
        for opt in self.optimizers.values():
            self.scaler.step(opt)
        self.scaler.update()
        for sched in self.step_schedulers.values():
            sched.step()
        return {"loss": float(total.detach()), **terms}

    def end_epoch(self) -> None:
        for sched in self.epoch_schedulers.values():
            sched.step()

    def state(self) -> dict[str, Any]:
        return {
            "optimizers": {k: o.state_dict() for k, o in self.optimizers.items()},
            "epoch_schedulers": {k: s.state_dict() for k, s in self.epoch_schedulers.items()},
            "step_schedulers": {k: s.state_dict() for k, s in self.step_schedulers.items()},
            "scaler": self.scaler.state_dict(),
            "method_state": self.extra_state(),
        }

    def load_state(self, state: dict[str, Any]) -> None:
        for k, o in self.optimizers.items():
            o.load_state_dict(state["optimizers"][k])
        for k, s in self.epoch_schedulers.items():
            s.load_state_dict(state["epoch_schedulers"][k])
        for k, s in self.step_schedulers.items():
            s.load_state_dict(state["step_schedulers"][k])
        if state.get("scaler"):
            self.scaler.load_state_dict(state["scaler"])
        self.load_extra_state(state.get("method_state", {}))


def freeze(module: nn.Module) -> nn.Module:
    for p in module.parameters():
        p.requires_grad_(False)
    return module


def trainable(module: nn.Module) -> list[nn.Parameter]:
    return [p for p in module.parameters() if p.requires_grad]


def seed_everything(seed: int) -> None:
    torch.manual_seed(seed)
    np.random.seed(seed % 2**32)
