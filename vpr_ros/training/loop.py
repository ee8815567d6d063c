"""
The training loop.

Epochs of batches with a progress bar, validation Recall@1, plot, atomic checkpoints, resume.

Resume granularity is the epoch: a run killed mid-epoch restarts that epoch from the last
checkpoint, with the same batches (they depend only on seed and epoch).
"""

from __future__ import annotations

import json
import logging
import math
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from vpr_ros.errors import ConfigError
from vpr_ros.training.base import DataConfig, MethodTrainer
from vpr_ros.training.checkpoint import BEST, EXTRA_KEY, LAST, read_checkpoint, save_atomic
from vpr_ros.training.datasets import PlaceSet
from vpr_ros.training.sampling import load_batches
from vpr_ros.training.validation import ValidationSet, recall_at_1

log = logging.getLogger(__name__)

PLOT = "training.png"
HISTORY = "history.json"


@dataclass
class LoopConfig:
    out: Path
    epochs: int
    data: DataConfig
    workers: int = 0
    resume: bool = False
    patience: int = 0  # stop after this many epochs without a better R@1 (0: never)
    run_config: dict = field(
        default_factory=dict
    )  # recorded in the checkpoint for the user's reference


@dataclass
class History:
    r1_before: float = math.nan
    loss: list[float] = field(default_factory=list)
    r1: list[float] = field(default_factory=list)
    seconds: list[float] = field(default_factory=list)
    best_r1: float = -1.0
    not_improved: int = 0


def plot_history(history: History, path: Path, title: str) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    epochs = np.arange(1, len(history.loss) + 1)
    fig, ax_loss = plt.subplots(figsize=(6, 3.5))
    ax_loss.plot(epochs, history.loss, "o-", color="tab:red", label="training loss")
    ax_loss.set_xlabel("epoch")
    ax_loss.set_ylabel("mean training loss", color="tab:red")
    ax_r1 = ax_loss.twinx()
    ax_r1.plot(
        np.arange(0, len(history.r1) + 1), [history.r1_before, *history.r1], "s-", color="tab:blue"
    )
    ax_r1.set_ylabel("validation Recall@1", color="tab:blue")
    ax_r1.set_ylim(0, 1)
    ax_loss.set_title(title)
    fig.tight_layout()
    tmp = path.with_suffix(".partial.png")
    fig.savefig(tmp, dpi=100)
    plt.close(fig)
    tmp.replace(path)
    return path


def _restore(trainer: MethodTrainer, path: Path) -> tuple[int, History]:
    obj = read_checkpoint(path, trainer.method)
    from vpr_ros.models.checkpoints import unwrap_state_dict

    trainer.model.load_state_dict(unwrap_state_dict(obj), strict=True)
    extra = obj[EXTRA_KEY]
    trainer.load_state(extra["trainer"])
    torch.set_rng_state(
        extra["torch_rng"]
    )  # dropout and initialisations continue as if never interrupted
    history = History(**extra["history"])
    log.info("resuming %s from %s after epoch %d", trainer.method, path, extra["epochs_done"])
    return int(extra["epochs_done"]), history


def train(
    trainer: MethodTrainer, train_set: PlaceSet, val: ValidationSet, cfg: LoopConfig
) -> History:
    """
    Train for ``cfg.epochs`` epochs (counting those done before a resume).

    Returns the history.
    """
    cfg.out.mkdir(parents=True, exist_ok=True)
    last = cfg.out / LAST
    start, history = 0, History()
    if cfg.resume:
        if not last.is_file():
            raise ConfigError(
                f"--resume: no {LAST} in {cfg.out}; run once without --resume to start"
            )
        start, history = _restore(trainer, last)
    elif last.exists():
        raise ConfigError(
            f"{cfg.out} already holds a training run ({LAST}); pass --resume to continue it, "
            "or choose another --out"
        )
    if math.isnan(history.r1_before):
        history.r1_before = recall_at_1(trainer.model, val, trainer.spec, trainer.device)
        log.info(
            "%s: validation R@1 before training %.4f (%d queries)",
            trainer.method,
            history.r1_before,
            len(val.queries),
        )
    for epoch in range(start, cfg.epochs):
        if cfg.patience and history.not_improved >= cfg.patience:
            log.info("no better R@1 for %d epochs: stopping", history.not_improved)
            break
        began = time.monotonic()
        trainer.start_epoch(epoch, train_set)
        data = trainer.epoch_data(epoch, train_set, cfg.data)
        trainer.train_mode()
        losses: list[float] = []
        bar = tqdm(
            load_batches(data, cfg.workers),
            total=len(data),
            desc=f"{trainer.method} epoch {epoch + 1}/{cfg.epochs}",
            unit="batch",
            leave=False,
            disable=None,
        )  # bars on terminals only
        for images, labels in bar:
            terms = trainer.step(
                images.to(trainer.device, non_blocking=True), labels.to(trainer.device)
            )
            losses.append(terms["loss"])
            bar.set_postfix({k: f"{v:.3g}" for k, v in terms.items()})
        bar.close()
        trainer.end_epoch()
        r1 = recall_at_1(trainer.model, val, trainer.spec, trainer.device)
        history.loss.append(float(np.mean(losses)) if losses else math.nan)
        history.r1.append(r1)
        history.seconds.append(time.monotonic() - began)
        improved = r1 > history.best_r1
        history.best_r1 = max(history.best_r1, r1)
        history.not_improved = 0 if improved else history.not_improved + 1
        log.info(
            "%s epoch %d/%d: loss %.4f, validation R@1 %.4f (%.0f s)",
            trainer.method,
            epoch + 1,
            cfg.epochs,
            history.loss[-1],
            r1,
            history.seconds[-1],
        )
        _save(trainer, epoch, history, cfg, improved)
    return history


def _save(
    trainer: MethodTrainer, epoch: int, history: History, cfg: LoopConfig, improved: bool
) -> None:
    checkpoint = trainer.official_checkpoint(
        epoch, [history.r1[-1]], history.best_r1, history.not_improved
    )
    checkpoint[EXTRA_KEY] = {
        "method": trainer.method,
        "epochs_done": epoch + 1,
        "history": history.__dict__,
        "trainer": trainer.state(),
        "torch_rng": torch.get_rng_state(),
        "config": cfg.run_config,
    }
    if improved:
        save_atomic(trainer.best_checkpoint(checkpoint), cfg.out / BEST)
    save_atomic(checkpoint, cfg.out / LAST)
    plot_history(history, cfg.out / PLOT, trainer.method)
    tmp = cfg.out / (HISTORY + ".partial")
    tmp.write_text(json.dumps({"method": trainer.method, **history.__dict__}, indent=1) + "\n")
    tmp.replace(cfg.out / HISTORY)
