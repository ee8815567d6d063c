"""
SciceVPR trainers (shuimushan/SciceVPR).

The Super-CricaVPR teacher, then the student distilled from it.

Teacher: frozen DINOv2; the 1x1 fusion conv over the selected blocks, the token mixer, GeM and
the 2-layer cross-image encoder train with the multi-similarity loss (README: 10 epochs).
Student: backbone, fusion conv and GeM copied from the teacher and frozen; the token mixer and
the 1-layer encoder train with multi-similarity + MSE to the teacher's descriptors of the same
batch, summed and divided by the batch size (loss_distill_crica_stable.py; README: 1 epoch).
Both: Adam 1e-4, halved every 3 epochs. The frozen backbone runs without gradients, once per batch.
"""

from __future__ import annotations

import torch
from torch import nn

from vpr_ros.models.scicevpr import MultiLayerDinoV2, SciceVPR, SuperCricaVPR
from vpr_ros.models.spec import ModelSpec
from vpr_ros.training.backbones import TinyBackbone, dinov2_backbone
from vpr_ros.training.base import MethodTrainer, freeze, trainable
from vpr_ros.training.losses import MultiSimilarity

LR = 1e-4
LR_HALVING_EPOCHS = 3
INPUT_SIZE = (224, 224)  # the token mixer is fixed to a 16x16 map


def build_scicevpr(cls: type[SciceVPR], arch: str | TinyBackbone) -> SciceVPR:
    """
    Official layout.

    The last four blocks (8-11 of ViT-B) concatenated; a tiny backbone uses its last four (or all).
    """
    dino = dinov2_backbone(arch)
    depth = len(dino.blocks)
    out_indices = list(range(max(0, depth - 4), depth))
    return cls(
        MultiLayerDinoV2(dino, out_indices),
        backbone_out_dim=dino.embed_dim * len(out_indices),
        mix_in_dim=dino.embed_dim,
    )


def scicevpr_spec(name: str, model: SciceVPR) -> ModelSpec:
    return ModelSpec(
        name=name,
        family="SciceVPR",
        build=lambda: model,
        input_size=INPUT_SIZE,
        dim=14 * model.conv.out_channels,
        batch_independent=not isinstance(model, SuperCricaVPR),
    )


class _SciceTrainer(MethodTrainer):
    def __init__(self, model: SciceVPR, spec: ModelSpec, device: torch.device, lr: float) -> None:
        super().__init__(model, spec, device)
        self.ms = MultiSimilarity()
        self.lr = lr

    def _start_optimiser(self, params: list[nn.Parameter]) -> None:
        opt = torch.optim.Adam(params, lr=self.lr)
        self.optimizers["model"] = opt
        self.epoch_schedulers["lr"] = torch.optim.lr_scheduler.StepLR(
            opt, LR_HALVING_EPOCHS, gamma=0.5
        )

    def train_mode(self) -> None:
        self.model.train()
        self.model.backbone.eval()

    def maps(self, images: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            return self.model.backbone(images)


class TeacherTrainer(_SciceTrainer):
    method = "scicevpr-teacher"

    def __init__(
        self, model: SuperCricaVPR, spec: ModelSpec, device: torch.device, lr: float = LR
    ) -> None:
        super().__init__(model, spec, device, lr)
        freeze(model.backbone)
        self._start_optimiser(trainable(model))

    def loss(
        self, images: torch.Tensor, labels: torch.Tensor
    ) -> tuple[torch.Tensor, dict[str, float]]:
        return self.ms(self.model.head(self.maps(images)), labels), {}


def student_from_teacher(teacher: SuperCricaVPR, arch: str | TinyBackbone) -> SciceVPR:
    """Build a student whose backbone, fusion conv and GeM are the teacher's (copied)."""
    student = build_scicevpr(SciceVPR, arch)
    shared = {
        k: v
        for k, v in teacher.state_dict().items()
        if k.startswith(("backbone.", "conv.", "gem."))
    }
    missing = [k for k in shared if k not in student.state_dict()]
    if missing:
        raise ValueError(f"teacher and student differ in {missing[:3]}")
    student.load_state_dict(shared, strict=False)
    return student


class StudentTrainer(_SciceTrainer):
    method = "scicevpr"

    def __init__(
        self,
        model: SciceVPR,
        teacher: SuperCricaVPR,
        spec: ModelSpec,
        device: torch.device,
        lr: float = LR,
    ) -> None:
        super().__init__(model, spec, device, lr)
        self.teacher = freeze(teacher.to(device)).eval()
        for part in (model.backbone, model.conv, model.gem):
            freeze(part)
        self._start_optimiser(trainable(model))

    def train_mode(self) -> None:
        super().train_mode()
        self.teacher.eval()

    def loss(
        self, images: torch.Tensor, labels: torch.Tensor
    ) -> tuple[torch.Tensor, dict[str, float]]:
        maps = self.maps(images)  # the student's backbone is a copy of the teacher's
        with torch.no_grad():
            target = self.teacher.head(maps)
        descriptors = self.model.head(maps)
        ms = self.ms(descriptors, labels)
        distill = (descriptors.float() - target.float()).pow(2).sum() / len(target)
        return ms + distill, {"ms": float(ms.detach()), "distill": float(distill.detach())}
