"""
FoL (chenshunpeng/FoL): DINOv2 + SALAD-style optimal-transport aggregator guided by CLS attention.

``FoLNet.forward`` gives the 8448-D global descriptor (ONNX-friendly, no
data-dependent control flow). ``FoLNet.local_outputs`` also gives the
upsampled local features and the selection masks used for re-ranking.
Key names follow the official modules (``backbone.model.*``, ``aggregator.*``,
``upconv*``) so released checkpoints load strictly.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from vpr_ros.models.dinov2 import DinoVisionTransformer, dinov2_vit

from vpr_ros.models.spec import ModelSpec

SINKHORN_ITERS = 3
# CLS attention below this is treated as background (dustbin logit 1 - 0 = 1).
ATTENTION_FLOOR = 0.01
NUM_SELECTED = 225  # tokens kept for the local branch (official constant)
NUM_TOP_CLIPPED = 3  # largest confidences clipped before the softmax
LOCAL_DIM = 128  # channels of the local head (upconv2)
CLIP_QUANTILE = 0.05  # ... down to the value at this sorted position


class DinoV2WithClsAttention(nn.Module):
    """
    All blocks + final norm; also the last block's CLS->patch attention summed over heads.

    Returns (f [B, C, h, w], t [B, C], att [B, h*w]).
    """

    def __init__(self, model: DinoVisionTransformer) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        grid_h, grid_w = self.model.grid(x)
        tokens = self.model.prepare_tokens(x)
        for blk in self.model.blocks[:-1]:
            tokens = blk(tokens)
        last = self.model.blocks[-1]
        att = last.attn.cls_attention(last.norm1(tokens))[:, :, 1:].sum(dim=1)
        tokens = self.model.norm(last(tokens))
        f = tokens[:, 1:].reshape(tokens.shape[0], grid_h, grid_w, -1).permute(0, 3, 1, 2)
        return f, tokens[:, 0], att


def log_optimal_transport(scores: torch.Tensor, dustbin: torch.Tensor, iters: int) -> torch.Tensor:
    """
    Log-space Sinkhorn (SuperGlue's) with a dustbin ROW of per-token logits.

    scores [B, m, n], dustbin [B, n] -> log transport [B, m+1, n], scaled by (m+n).
    Needs n > m (more tokens than clusters: at least 126x126 px for 64 clusters).
    """
    b, m, n = scores.shape
    couplings = torch.cat([scores, dustbin.unsqueeze(1)], dim=1)
    # float32 logs of the counts, as the official code computes them
    norm = -scores.new_tensor(float(m + n)).log()
    dustbin_mass = scores.new_tensor(float(n - m)).log() + norm
    log_mu = torch.cat([norm.expand(m), dustbin_mass.unsqueeze(0)])
    log_nu = norm.expand(n)
    log_mu, log_nu = log_mu.expand(b, -1), log_nu.expand(b, -1)
    u, v = torch.zeros_like(log_mu), torch.zeros_like(log_nu)
    for _ in range(iters):
        u = log_mu - torch.logsumexp(couplings + v.unsqueeze(1), dim=2)
        v = log_nu - torch.logsumexp(couplings + u.unsqueeze(2), dim=1)
    return couplings + u.unsqueeze(2) + v.unsqueeze(1) - norm


def clip_top_values(values: torch.Tensor) -> torch.Tensor:
    """
    Set the largest entries of each row to the value at sorted position int(0.05 N).

    The official ``replace_top_values``.
    """
    _, top_indices = torch.topk(values, NUM_TOP_CLIPPED, dim=1)
    kth = values.sort(dim=1, descending=True).values[:, int(CLIP_QUANTILE * values.shape[1])]
    return values.scatter(1, top_indices, kth.unsqueeze(1).expand(-1, NUM_TOP_CLIPPED))


def local_confidence(assignment: torch.Tensor) -> torch.Tensor:
    """
    Per-token confidence [B, N].

    Mean transport mass over clusters, top values clipped, softmaxed.
    """
    return clip_top_values(assignment.mean(dim=1)).softmax(dim=-1)


def top_token_mask(confidence: torch.Tensor, h: int, w: int) -> torch.Tensor:
    """
    Mask [B, h, w] float, 1 at the NUM_SELECTED most confident tokens.

    Those are the discriminative regions.
    """
    top = torch.topk(confidence, NUM_SELECTED, dim=-1).indices
    return torch.zeros_like(confidence).scatter(1, top, 1.0).reshape(confidence.shape[0], h, w)


def selected_rows(
    local_map: torch.Tensor, selection: torch.Tensor
) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """
    Pixels of the local map [B, H', W', d] under the nearest-upsampled token mask.

    Row-major, unpadded. Returns (pixel mask [B, H'*W'] bool, per image its rows [n_i, d]).
    """
    pixels = (
        F.interpolate(selection.unsqueeze(1), size=local_map.shape[1:3], mode="nearest").flatten(1)
        > 0
    )
    return pixels, [local_map[i].flatten(0, 1)[pixels[i]] for i in range(len(local_map))]


def kl_divergence(log_q: torch.Tensor, p: torch.Tensor) -> torch.Tensor:
    """Batch mean of KL(p || q) per row (as nn.KLDivLoss(reduction='none')(...).sum(-1).mean())."""
    return F.kl_div(log_q, p, reduction="none").sum(-1).mean()


class FoLAggregator(nn.Module):
    def __init__(
        self,
        num_channels: int,
        num_clusters: int = 64,
        cluster_dim: int = 128,
        token_dim: int = 256,
        dropout: float = 0.3,
    ) -> None:
        super().__init__()
        self.token_features = nn.Sequential(
            nn.Linear(num_channels, 512), nn.ReLU(), nn.Linear(512, token_dim)
        )
        self.cluster_features = nn.Sequential(
            nn.Conv2d(num_channels, 512, 1),
            nn.Dropout(dropout),
            nn.ReLU(),
            nn.Conv2d(512, cluster_dim, 1),
        )
        self.score = nn.Sequential(
            nn.Conv2d(num_channels, 512, 1),
            nn.Dropout(dropout),
            nn.ReLU(),
            nn.Conv2d(512, num_clusters, 1),
        )

    def assignment(self, f: torch.Tensor, mask_guide: torch.Tensor) -> torch.Tensor:
        """Token-to-cluster transport P [B, clusters, N]; background mass goes to the dustbin."""
        scores = self.score(f).flatten(2)
        return log_optimal_transport(scores, 1 - mask_guide, SINKHORN_ITERS).exp()[:, :-1]

    def descriptor(
        self, f: torch.Tensor, t: torch.Tensor, assignment: torch.Tensor
    ) -> torch.Tensor:
        """
        Compute cat(L2(token MLP), L2-per-cluster(sum_n features * P)) -> L2.

        The second part is flattened [dim x clusters].
        """
        features = self.cluster_features(f).flatten(2)  # [B, cluster_dim, N]
        clusters = torch.einsum("bdn,bkn->bdk", features, assignment)
        token = F.normalize(self.token_features(t), p=2.0, dim=-1)
        return F.normalize(
            torch.cat([token, F.normalize(clusters, p=2.0, dim=1).flatten(1)], dim=-1),
            p=2.0,
            dim=-1,
        )

    def forward(self, f: torch.Tensor, t: torch.Tensor, mask_guide: torch.Tensor) -> torch.Tensor:
        return self.descriptor(f, t, self.assignment(f, mask_guide))


@dataclass
class FoLLocalOutput:
    """What FoL's test path yields besides the global descriptor (for re-ranking)."""

    global_descriptor: torch.Tensor  # [B, 8448]
    local_map: torch.Tensor  # [B, H', W', 128], L2-normalised per pixel (H' = 4h - 3)
    mask_separate: torch.Tensor  # [B, H', W'] confidence, bilinearly upsampled
    selection_mask: torch.Tensor  # [B, h, w] float 1 at the top-225 tokens
    mix_matrix: torch.Tensor  # [B, h*w] softmaxed confidence
    mask_guide: torch.Tensor  # [B, h*w] thresholded CLS attention
    local_features: torch.Tensor  # [B, max_len, 128] selected pixels, row-major, zero padded
    num_local: torch.Tensor  # [B] selected (non-padding) rows
    loss_kl_1: torch.Tensor  # training losses, kept to match the official outputs
    loss_kl_2: torch.Tensor


def padded_length(height: int) -> int:
    """Official pad length of the selected local features for an upsampled map of this height."""
    if height > 80:
        return 3600
    if height > 70:
        return 3500
    if height > 40:
        return 1000
    return height * height


class FoLNet(nn.Module):
    """
    ``backbone=None`` leaves the head only.

    Then call ``global_descriptor``/``head`` with (f, t, att).
    """

    def __init__(self, backbone: DinoV2WithClsAttention | None, num_channels: int) -> None:
        super().__init__()
        self.backbone = backbone if backbone is not None else nn.Identity()
        self.aggregator = FoLAggregator(num_channels)
        self.upconv = nn.ConvTranspose2d(num_channels, 256, kernel_size=3, stride=2, padding=1)
        self.upconv2 = nn.ConvTranspose2d(256, LOCAL_DIM, kernel_size=3, stride=2, padding=1)

    @staticmethod
    def mask_guide(att: torch.Tensor) -> torch.Tensor:
        return torch.where(att >= ATTENTION_FLOOR, att, torch.zeros_like(att))

    def global_descriptor(
        self, f: torch.Tensor, t: torch.Tensor, att: torch.Tensor
    ) -> torch.Tensor:
        return self.aggregator(f, t, self.mask_guide(att))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.global_descriptor(*self.backbone(x))

    def local_outputs(self, x: torch.Tensor) -> FoLLocalOutput:
        return self.head(*self.backbone(x))

    def global_and_local(self, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """
        One backbone pass -> (global descriptors, per image its selected local rows).

        Global descriptors [B, 8448], local rows [n_i, 128]. The rows are ``head``'s
        ``local_features[i, :num_local[i]]`` (the official selection) without the padding and
        without the training-only outputs: what re-ranking stores and matches.
        """
        return self.global_and_local_head(*self.backbone(x))

    def global_and_local_head(
        self, f: torch.Tensor, t: torch.Tensor, att: torch.Tensor
    ) -> tuple[torch.Tensor, list[torch.Tensor]]:
        assignment = self.aggregator.assignment(f, self.mask_guide(att))
        selection = top_token_mask(local_confidence(assignment), f.shape[2], f.shape[3])
        _, rows = selected_rows(self.local_map(f), selection)
        return self.aggregator.descriptor(f, t, assignment), rows

    def local_map(self, f: torch.Tensor) -> torch.Tensor:
        """Up-convolved local features [B, 4h-3, 4w-3, 128], L2-normalised per pixel."""
        return F.normalize(self.upconv2(F.relu(self.upconv(f))).permute(0, 2, 3, 1), p=2.0, dim=-1)

    def head(self, f: torch.Tensor, t: torch.Tensor, att: torch.Tensor) -> FoLLocalOutput:
        """Official ``FoLNet.forward(x, test=True)`` from the backbone outputs."""
        b, _, h, w = f.shape
        mask_guide = self.mask_guide(att)
        assignment = self.aggregator.assignment(f, mask_guide)
        global_descriptor = self.aggregator.descriptor(f, t, assignment)

        confidence = local_confidence(assignment)
        attention = clip_top_values(att).softmax(dim=-1)
        loss_kl_1 = kl_divergence(confidence.log(), attention)
        loss_kl_2 = kl_divergence(attention.log(), confidence)
        selection = top_token_mask(confidence, h, w)

        local_map = self.local_map(f)
        size = local_map.shape[1:3]
        mask_separate = F.interpolate(
            confidence.reshape(b, 1, h, w), size=size, mode="bilinear", align_corners=True
        ).squeeze(1)
        selected_pixels, rows = selected_rows(local_map, selection)
        length = max([padded_length(size[0])] + [len(r) for r in rows])
        local_features = local_map.new_zeros(b, length, local_map.shape[-1])
        for i, r in enumerate(rows):
            local_features[i, : len(r)] = r
        return FoLLocalOutput(
            global_descriptor=global_descriptor,
            local_map=local_map,
            mask_separate=mask_separate,
            selection_mask=selection,
            mix_matrix=confidence,
            mask_guide=mask_guide,
            local_features=local_features,
            num_local=selected_pixels.sum(dim=1),
            loss_kl_1=loss_kl_1,
            loss_kl_2=loss_kl_2,
        )


def _build(arch: str) -> FoLNet:
    dino = dinov2_vit(arch)
    return FoLNet(DinoV2WithClsAttention(dino), dino.embed_dim)


def fol_b() -> FoLNet:
    return _build("vitb14")


def fol_l() -> FoLNet:
    return _build("vitl14")


PRESETS = tuple(
    ModelSpec(
        name=f"fol-{size}",
        family="FoL",
        build=build,
        # the paper's main results use 504; 322 is its training size and ~2.5x faster
        input_size=(322, 322),
        dim=256 + 64 * 128,
        weights_source="https://github.com/chenshunpeng/FoL",
        signature={"aggregator.token_features.0.weight": (512, width), "upconv.weight": None},
        description=(
            f"FoL ViT-{size.upper()}/14 global descriptor ({release}.pth,"
            " huggingface.co/shunpeng/FoL)"
        ),
    ) for size, width, build, release in (
        ("b", 768, fol_b, "FoL_base"),
        ("l", 1024, fol_l, "FoL_large"),
    )
)
