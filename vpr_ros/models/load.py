"""A named model with its weights in, and the fingerprint that maps record."""

from __future__ import annotations

import hashlib
from pathlib import Path

import torch
from torch import nn

from vpr_ros.errors import WeightsError
from vpr_ros.models import registry
from vpr_ros.models.checkpoints import load_official
from vpr_ros.models.spec import ModelSpec


def state_dict_fingerprint(model_name: str, state_dict: dict) -> str:
    """
    Hash (sha256) the model name and every tensor's name, shape, dtype and bytes.

    Tensors sorted by name.
    """
    h = hashlib.sha256(model_name.encode())
    for key in sorted(state_dict):
        t = state_dict[key].detach().cpu().contiguous()
        h.update(f"{key}:{tuple(t.shape)}:{t.dtype}".encode())
        h.update(t.view(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()[:16]


def load_model(name: str, weights: str | Path | None = None) -> tuple[nn.Module, ModelSpec, str]:
    """
    Build the named model and put its weights in.

    Returns (model in eval mode, spec, fingerprint).
    """
    spec = registry.spec(name)
    model = registry.build(name)
    if weights:
        load_official(model, weights)
    elif spec.shipped_weights is not None:
        model.load_state_dict(spec.shipped_weights(model), strict=True)
    elif spec.needs_weights:
        raise WeightsError(
            f"model {name!r} needs its official weights and none were given. "
            f"Download them from {spec.weights_source} "
            f"and pass the file with --weights (CLI) or the 'weights' parameter (node)."
        )
    model.eval()
    return model, spec, state_dict_fingerprint(name, model.state_dict())
