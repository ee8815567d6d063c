"""
Put official checkpoint files into the models of this package.

The only place in ``models/`` that reads files. Accepts what the authors saved:
a bare state_dict, ``{'model_state_dict': ...}`` or ``{'state_dict': ...}``,
with or without DataParallel's ``module.`` prefix. Loading is strict; a file
that does not fit raises ``WeightsError`` naming the keys and, where it is
obvious, the model the file belongs to.
"""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import torch
from torch import nn

from vpr_ros.errors import WeightsError
from vpr_ros.models.dinov2 import DinoVisionTransformer
from vpr_ros.models.registry import guess_model
from vpr_ros.models.spec import StateDict

WRAPPER_KEYS = ("model_state_dict", "state_dict", "model")
DATAPARALLEL_PREFIX = "module."
SHOWN_KEYS = 10
# Training checkpoints also pickle numpy recalls; allow those (and only those) beside tensors.
_NUMPY_GLOBALS = [
    np._core.multiarray._reconstruct,
    (np._core.multiarray._reconstruct, "numpy.core.multiarray._reconstruct"),
    np._core.multiarray.scalar,
    (np._core.multiarray.scalar, "numpy.core.multiarray.scalar"),
    np.ndarray,
    np.dtype,
    *(getattr(np.dtypes, name) for name in np.dtypes.__all__),
]


def unwrap_state_dict(obj: object) -> StateDict:
    """Return the state_dict inside a checkpoint object, without ``module.`` prefixes."""
    for key in WRAPPER_KEYS:
        if isinstance(obj, dict) and isinstance(obj.get(key), dict):
            obj = obj[key]
            break
    if not isinstance(obj, dict) or not all(torch.is_tensor(v) for v in obj.values()):
        raise WeightsError(
            "checkpoint holds no state_dict (expected a dict of tensors, or one under"
            f" {' / '.join(repr(k) for k in WRAPPER_KEYS)}); pass the model weights file the"
            " authors released"
        )
    return {k.removeprefix(DATAPARALLEL_PREFIX): v for k, v in obj.items()}


def read_state_dict(path: str | Path) -> StateDict:
    path = Path(path)
    if not path.is_file():
        raise WeightsError(
            f"no weights file at {path}; download it from the model's weights_source and give its"
            " path"
        )
    try:
        with torch.serialization.safe_globals(_NUMPY_GLOBALS):
            obj = torch.load(path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, ValueError) as exc:
        raise WeightsError(
            f"{path} is not a readable torch checkpoint ({type(exc).__name__}:"
            f" {str(exc).splitlines()[0]}); check that the download is complete and is a .pth/.pt"
            " file"
        ) from exc
    return unwrap_state_dict(obj)


def _first(keys: list[str]) -> str:
    shown = ", ".join(keys[:SHOWN_KEYS])
    return shown + (f", ... ({len(keys) - SHOWN_KEYS} more)" if len(keys) > SHOWN_KEYS else "")


def _mismatch_report(
    expected: StateDict, given: StateDict, allowed_missing: tuple[str, ...] = ()
) -> str:
    """Empty when ``given`` fits ``expected``; otherwise what does not fit."""
    missing = [k for k in expected if k not in given and not any(a in k for a in allowed_missing)]
    unexpected = [k for k in given if k not in expected]
    shapes = [
        f"{k}: file {list(given[k].shape)} vs model {list(v.shape)}"
        for k, v in expected.items()
        if k in given and given[k].shape != v.shape
    ]
    parts = []
    if missing:
        parts.append(f"{len(missing)} missing keys: {_first(missing)}")
    if unexpected:
        parts.append(f"{len(unexpected)} unexpected keys: {_first(unexpected)}")
    if shapes:
        parts.append(f"{len(shapes)} shape mismatches: {_first(shapes)}")
    return "; ".join(parts)


def _raise_unfit(path: str | Path, model: nn.Module, report: str, state_dict: StateDict) -> None:
    guess = guess_model(state_dict)
    hint = f" The file looks like {guess}." if guess else ""
    raise WeightsError(
        f"weights {path} do not fit {type(model).__name__}: {report}.{hint} "
        "Fix: choose the preset that matches the file, or use the file released for this model."
    )


def load_official(model: nn.Module, path: str | Path) -> nn.Module:
    """Load an official checkpoint strictly into ``model`` (returned, for chaining)."""
    state_dict = read_state_dict(path)
    report = _mismatch_report(model.state_dict(), state_dict)
    if report:
        _raise_unfit(path, model, report, state_dict)
    model.load_state_dict(state_dict, strict=True)
    return model


def find_backbone(model: nn.Module) -> DinoVisionTransformer:
    """Return the (single) DINOv2 inside a VPR model, or the model itself."""
    found = [m for m in model.modules() if isinstance(m, DinoVisionTransformer)]
    if len(found) != 1:
        raise WeightsError(
            f"{type(model).__name__} holds {len(found)} DINOv2 backbones; load_backbone_pretrain"
            " needs exactly one"
        )
    return found[0]


def load_backbone_pretrain(model: nn.Module, path: str | Path) -> nn.Module:
    """
    Load a bare DINOv2 ``*_pretrain.pth`` into the model's backbone (e.g. before training).

    Everything else keeps its initialisation; MutualVPR's adapters are the only
    backbone keys allowed to be absent from the file.
    """
    backbone = find_backbone(model)
    state_dict = read_state_dict(path)
    report = _mismatch_report(backbone.state_dict(), state_dict, allowed_missing=(".adapter.",))
    if report:
        _raise_unfit(path, backbone, report, state_dict)
    backbone.load_state_dict(state_dict, strict=False)
    return model
