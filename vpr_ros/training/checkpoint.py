"""
Training checkpoints in the authors' layouts, written atomically, read back for resume.

Layouts (keys as the official training scripts save them; model keys carry DataParallel's
``module.`` prefix, as theirs do):
- ``gsv`` (SciceVPR, FoL, and the trainable baseline): epoch_num, model_state_dict,
  optimizer_state_dict, recalls, best_r5, not_improved_num.
- ``cosplace`` (MutualVPR): epoch_num, model_state_dict, optimizer_state_dict,
  classifiers_state_dict, optimizers_state_dict, best_val_recall1.
What resuming needs beyond that (schedulers, history, per-method state) sits under one extra
key, ``vpr_ros``, which the authors' loaders ignore. Recalls are plain float lists.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

from vpr_ros.errors import WeightsError
from vpr_ros.fileio import atomic_output
from vpr_ros.models.checkpoints import DATAPARALLEL_PREFIX

LAST = "last_checkpoint.pth"
BEST = "best_model.pth"
EXTRA_KEY = "vpr_ros"


def dataparallel_state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    return {DATAPARALLEL_PREFIX + k: v.detach().cpu() for k, v in model.state_dict().items()}


def save_atomic(obj: Any, path: Path) -> None:
    """
    torch.save to a temporary file beside ``path``, fsync, then rename over it.

    Never half a file.
    """
    with atomic_output(path) as tmp:
        torch.save(obj, tmp)


def read_checkpoint(path: Path, method: str) -> dict[str, Any]:
    """Load a checkpoint written by this trainer for ``method``; refuses another method's file."""
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except (RuntimeError, EOFError, ValueError, OSError) as exc:
        raise WeightsError(
            f"cannot read checkpoint {path} ({type(exc).__name__}: {str(exc).splitlines()[0]}); "
            "start again without --resume, or point --out at another directory"
        ) from exc
    extra = obj.get(EXTRA_KEY) if isinstance(obj, dict) else None
    if not isinstance(extra, dict):
        raise WeightsError(
            f"{path} was not written by `vpr-ros train` (no '{EXTRA_KEY}' entry), so it cannot "
            "be resumed; "
            "to start from official weights use --init-weights, or choose a fresh --out"
        )
    if extra.get("method") != method:
        raise WeightsError(
            f"{path} is a checkpoint of {extra.get('method')!r}, not {method!r}: resume with "
            f"--method {extra.get('method')}, or choose a fresh --out for {method}"
        )
    return obj
