"""
Metric-learning losses shared by the trainers.

With pytorch-metric-learning, as the official code uses it.
"""

from __future__ import annotations

import torch
from pytorch_metric_learning import losses, miners
from pytorch_metric_learning.distances import CosineSimilarity, DotProductSimilarity


class MultiSimilarity:
    """
    MultiSimilarityLoss(alpha=1, beta=50, base=0) on dot products.

    Over MultiSimilarityMiner(epsilon=0.1) pairs. The SciceVPR / FoL recipe (their loss.py),
    itself GSV-Cities' default.
    """

    def __init__(self) -> None:
        self.loss = losses.MultiSimilarityLoss(
            alpha=1.0, beta=50, base=0.0, distance=DotProductSimilarity()
        )
        self.miner = miners.MultiSimilarityMiner(epsilon=0.1, distance=CosineSimilarity())

    def __call__(self, descriptors: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        descriptors = (
            descriptors.float()
        )  # pml's mining runs in the loss dtype; fp16 under AMP overflows beta=50
        return self.loss(descriptors, labels, self.miner(descriptors, labels))
