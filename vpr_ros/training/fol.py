"""
FoL trainer (chenshunpeng/FoL).

Multi-similarity plus FoL's local terms, as its train.py and loss.py compute them.

Total loss per batch (train.py): multi-similarity on the global descriptors
+ local triplet loss on the selected local features (mutual nearest neighbours, SelaVPR-style)
+ 5e-3 * (KL(attention || confidence) + KL(confidence || attention)) (the spatial alignment terms)
+ separation loss (foreground/background contrast of the same place under the upsampled mix mask)
+ weakly supervised local loss on pseudo-correspondences mined from the backbone features.
Last ``trainable_blocks`` DINOv2 blocks (+ final norm), aggregator and up-convolutions train;
AdamW 6e-5 (weight decay 9.5e-9), linear decay to 0.1x over 10000 steps, AMP on CUDA.

Where this follows the code rather than the paper, and where it generalises it:
- the training selection uses mix = confidence + attention (test time uses confidence alone);
- the weak-supervision patch -> local-map mapping is written for any grid (the code hard-codes
  23x23 tokens at 322 px on an 89x89 map) and clamps at the border;
- when no mutual nearest neighbour passes the 0.7 threshold, the local similarity falls back to
  the mean over all rows (the code does so only when none is mutual; with none above the
  threshold it would produce NaN);
- the training images are normalised with ImageNet mean/std like the test images (the official
  GSV-Cities training transform omits the normalisation);
- ``random.choice`` of the separation partner uses a seeded generator.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from pytorch_metric_learning.miners import BatchHardMiner

from vpr_ros.models.fol import (
    DinoV2WithClsAttention,
    FoLNet,
    clip_top_values,
    kl_divergence,
    local_confidence,
    padded_length,
    selected_rows,
    top_token_mask,
)
from vpr_ros.models.spec import ModelSpec
from vpr_ros.training.backbones import TinyBackbone, dinov2_backbone
from vpr_ros.training.base import MethodTrainer, trainable
from vpr_ros.training.losses import MultiSimilarity

LR = 6e-5
WEIGHT_DECAY = 9.5e-9
LR_DECAY_STEPS = 10_000
KL_WEIGHT = 5e-3
MATCH_THRESHOLD = 0.7  # local_sim: mutual neighbours kept above this cosine
WEAK_MASK_MIN = 0.1  # tokens whose CLS attention is above this anchor pseudo-correspondences
WEAK_SIM_MIN = 0.8
WEAK_RATIO_MIN = 2.0
WEAK_MAX_PER_IMAGE = 5
WEAK_WEIGHT = 1e-2
FOREGROUND_WEIGHT = 0.7


def build_fol(arch: str | TinyBackbone) -> FoLNet:
    dino = dinov2_backbone(arch)
    return FoLNet(DinoV2WithClsAttention(dino), dino.embed_dim)


def fol_spec(model: FoLNet, input_size: tuple[int, int]) -> ModelSpec:
    return ModelSpec(
        name="fol", family="FoL", build=lambda: model, input_size=input_size, dim=256 + 64 * 128
    )


@dataclass
class TrainOutputs:
    """FoLNet.forward(x, test=False) of the official code."""

    descriptors: torch.Tensor  # [B, 8448]
    local_features: torch.Tensor  # [B, L, 128] selected pixels, padded, L2-normalised
    kl_1: torch.Tensor
    kl_2: torch.Tensor
    local_separate: torch.Tensor  # [B, H', W', 128] detached, L2-normalised
    mask_separate: torch.Tensor  # [B, H', W'] upsampled mix
    token_features: torch.Tensor  # [B, C, N] L2-normalised backbone features
    assignment: torch.Tensor  # [B, clusters, N]
    local_all: torch.Tensor  # [B, H', W', 128] L2-normalised
    mask_guide: torch.Tensor  # [B, N]


def train_forward(model: FoLNet, x: torch.Tensor) -> TrainOutputs:
    f, t, att = model.backbone(x)
    b, c, h, w = f.shape
    mask_guide = model.mask_guide(att)
    assignment = model.aggregator.assignment(f, mask_guide)
    descriptors = model.aggregator.descriptor(f, t, assignment)
    confidence = local_confidence(assignment)
    attention = clip_top_values(att).softmax(dim=-1)
    kl_1 = kl_divergence(confidence.log(), attention.detach())
    kl_2 = kl_divergence(attention.log(), confidence.detach())
    mix = confidence + attention
    raw = model.upconv2(F.relu(model.upconv(f))).permute(0, 2, 3, 1)
    size = raw.shape[1:3]
    mask_separate = F.interpolate(
        mix.reshape(b, 1, h, w), size=size, mode="bilinear", align_corners=True
    ).squeeze(1)
    _, rows = selected_rows(raw, top_token_mask(mix, h, w))
    length = max([padded_length(size[0])] + [len(r) for r in rows])
    padded = torch.nn.utils.rnn.pad_sequence(
        [F.pad(rows[0], (0, 0, 0, length - len(rows[0]))), *rows[1:]], batch_first=True
    )
    return TrainOutputs(
        descriptors=descriptors,
        local_features=F.normalize(padded, p=2, dim=-1),
        kl_1=kl_1,
        kl_2=kl_2,
        local_separate=F.normalize(raw.detach(), p=2, dim=-1),
        mask_separate=mask_separate,
        token_features=F.normalize(f.reshape(b, c, h * w), p=2, dim=1),
        assignment=assignment,
        local_all=F.normalize(raw, p=2, dim=-1),
        mask_guide=mask_guide,
    )


def local_similarity(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """
    Mean cosine of mutual nearest neighbours above MATCH_THRESHOLD between two [L, d] sets.

    As loss.py's match_batch_tensor.
    """
    sim = a @ b.T  # [La, Lb]
    best_b = sim.argmax(dim=1)
    best_a = sim.argmax(dim=0)
    ia = torch.arange(len(a), device=a.device)
    mutual = best_a[best_b] == ia
    ia, ib = ia[mutual], best_b[mutual]
    pair = (a[ia] * b[ib]).sum(dim=1)
    keep = pair > MATCH_THRESHOLD
    if keep.any():
        return pair[keep].mean()
    return (a * b).sum(dim=1).mean()


def local_triplet_loss(
    local_features: torch.Tensor, triplets: tuple[torch.Tensor, ...]
) -> torch.Tensor:
    total = local_features.new_zeros(())
    for anchor, positive, negative in zip(*triplets):
        sim_p = local_similarity(local_features[anchor], local_features[positive])
        sim_n = local_similarity(local_features[anchor], local_features[negative])
        total = total + torch.clamp(sim_n - sim_p, min=0.0)
    return total


def separation_loss(
    out: TrainOutputs, labels: torch.Tensor, images_per_place: int, rng: np.random.Generator
) -> torch.Tensor:
    """
    Foreground/background descriptors of each image vs a random other image of its place.

    As loss.py's loss_sep.
    """
    groups: dict[int, list[int]] = defaultdict(list)
    for i, label in enumerate(labels.tolist()):
        groups[label].append(i)
    bs = len(labels)
    total = out.mask_separate.new_zeros(())

    def fg_bg(i: int) -> tuple[torch.Tensor, torch.Tensor]:
        mask = out.mask_separate[i].unsqueeze(-1)
        fg = (out.local_separate[i] * mask).sum(dim=(0, 1))
        bg = (out.local_separate[i] * (1 - mask)).sum(dim=(0, 1))
        return F.normalize(fg, p=2, dim=-1), F.normalize(bg, p=2, dim=-1)

    for i in range(bs):
        members = groups[int(labels[i])]
        others = [j for k, j in enumerate(members) if k != i % images_per_place]
        j = others[int(rng.integers(len(others)))]
        fg_i, bg_i = fg_bg(i)
        fg_j, bg_j = fg_bg(j)
        loss = FOREGROUND_WEIGHT * (1 - F.cosine_similarity(fg_i, fg_j, dim=0)) + (
            1 - FOREGROUND_WEIGHT
        ) * (1 - F.cosine_similarity(bg_i, bg_j, dim=0))
        total = total + loss / bs
    return total


def weak_triplets(f1, f2, p1, p2, mask1) -> list[tuple[int, int, float]]:
    """
    Pseudo-correspondences (token in image 1, token in image 2, cosine).

    From global features (loss.py).
    """
    valid = torch.nonzero(mask1 > WEAK_MASK_MIN, as_tuple=False).squeeze(1)
    if valid.numel() < 2:
        return []
    valid = valid[1:]  # the code drops the first candidate
    clusters = p1[:, valid].argmax(dim=0)
    candidates = p2[clusters] > WEAK_MASK_MIN
    sim = F.cosine_similarity(f1[:, valid].T.unsqueeze(1), f2.T.unsqueeze(0), dim=-1).masked_fill(
        ~candidates, -10.0
    )
    top, idx = sim.topk(2, dim=1)
    ok = (top[:, 0] > WEAK_SIM_MIN) & (top[:, 0] / top[:, 1] > WEAK_RATIO_MIN)
    return list(zip(valid[ok].tolist(), idx[ok, 0].tolist(), top[ok, 0].tolist()))[
        :WEAK_MAX_PER_IMAGE
    ]


def patch_to_local(
    tokens: list[int], local: torch.Tensor, grid_w: int, image_size: int
) -> torch.Tensor:
    """
    3x3 mean of the local map around each token's patch centre.

    As loss.py's get_patch_center_mapping.
    """
    side = local.shape[0]
    scale = image_size / side
    out = []
    for token in tokens:
        row, col = divmod(token, grid_w)
        i = min(max(round((row * 14 + 7) / scale), 1), side - 2)
        j = min(max(round((col * 14 + 7) / scale), 1), side - 2)
        out.append(local[i - 1:i + 2, j - 1:j + 2].mean(dim=(0, 1)))
    return torch.stack(out)


def weak_supervision_loss(
    out: TrainOutputs, labels: torch.Tensor, grid_w: int, image_size: int
) -> torch.Tensor:
    groups: dict[int, list[int]] = defaultdict(list)
    for i, label in enumerate(labels.tolist()):
        groups[label].append(i)
    total, count = out.descriptors.new_zeros(()), 0
    for i, label in enumerate(labels.tolist()):
        members = groups[label]
        if len(members) < 2:
            continue
        j = members[(i % len(members) + 1) % len(members)]
        found = weak_triplets(
            out.token_features[i].float(),
            out.token_features[j].float(),
            out.assignment[i].float(),
            out.assignment[j].float(),
            out.mask_guide[i],
        )
        if not found:
            continue
        a_ids, p_ids, sims = zip(*found)
        anchors = patch_to_local(list(a_ids), out.local_all[i], grid_w, image_size)
        positives = patch_to_local(list(p_ids), out.local_all[j], grid_w, image_size)
        losses = 1 - F.cosine_similarity(anchors, positives, dim=1)
        total = total + (losses * torch.tensor(sims, device=losses.device)).sum() * WEAK_WEIGHT
        count += len(found)
    return total / count if count else total


class FoLTrainer(MethodTrainer):
    method = "fol"

    def __init__(
        self,
        model: FoLNet,
        spec: ModelSpec,
        device: torch.device,
        images_per_place: int,
        trainable_blocks: int = 4,
        lr: float = LR,
        seed: int = 0,
    ) -> None:
        super().__init__(model, spec, device)
        dino = model.backbone.model
        n = min(trainable_blocks, len(dino.blocks))
        for name, p in dino.named_parameters():
            block = int(name.split(".")[1]) if name.startswith("blocks.") else None
            p.requires_grad_(
                name.startswith("norm.") or (block is not None and block >= len(dino.blocks) - n)
            )
        self.images_per_place = images_per_place
        self.ms = MultiSimilarity()
        self.hard_miner = BatchHardMiner()
        self.rng = np.random.default_rng([seed, 4])
        opt = torch.optim.AdamW(trainable(model), lr=lr, weight_decay=WEIGHT_DECAY)
        self.optimizers["model"] = opt
        self.step_schedulers["lr"] = torch.optim.lr_scheduler.LinearLR(
            opt, 1.0, 0.1, total_iters=LR_DECAY_STEPS
        )

    def loss(
        self, images: torch.Tensor, labels: torch.Tensor
    ) -> tuple[torch.Tensor, dict[str, float]]:
        out = train_forward(self.model, images)
        descriptors = out.descriptors.float()
        ms = self.ms(descriptors, labels)
        local = local_triplet_loss(
            out.local_features.float(), self.hard_miner(descriptors, labels)
        )
        kl = KL_WEIGHT * (out.kl_1 + out.kl_2)
        sep = separation_loss(out, labels, self.images_per_place, self.rng)
        grid_w = images.shape[-1] // 14
        weak = weak_supervision_loss(out, labels, grid_w, images.shape[-1])
        terms = {"ms": ms, "local": local, "kl": kl, "sep": sep, "weak": weak}
        return sum(terms.values()), {k: float(v.detach()) for k, v in terms.items()}
