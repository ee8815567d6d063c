"""Is ``confidence`` a probability? Expected calibration error and a reliability diagram."""

from __future__ import annotations

from pathlib import Path

import numpy as np

BINS = 10


def reliability(confidence: np.ndarray, right: np.ndarray, bins: int = BINS):
    """Per equal-width bin: (mean confidence, share right, frames); empty bins left out."""
    confidence = np.asarray(confidence, dtype=np.float64)
    right = np.asarray(right, dtype=np.float64)
    which = np.clip((confidence * bins).astype(int), 0, bins - 1)
    count = np.bincount(which, minlength=bins)
    used = count > 0
    mean_conf = np.bincount(which, confidence, bins)[used] / count[used]
    share = np.bincount(which, right, bins)[used] / count[used]
    return mean_conf, share, count[used]


def expected_calibration_error(confidence: np.ndarray, right: np.ndarray,
                               bins: int = BINS) -> float:
    """Frame-weighted mean |share right - mean confidence| over the bins."""
    mean_conf, share, count = reliability(confidence, right, bins)
    return float(np.sum(count * np.abs(share - mean_conf)) / max(count.sum(), 1))


def plot_reliability(confidence: np.ndarray, right: np.ndarray, path: Path, title: str) -> Path:
    """Share right against confidence per bin (the diagonal is perfect calibration)."""
    from vpr_ros.evaluation.plots import plt

    mean_conf, share, count = reliability(confidence, right)
    fig, ax = plt.subplots(figsize=(4.2, 4), dpi=120)
    ax.plot([0, 1], [0, 1], color="grey", lw=1, ls="--", label="calibrated")
    ax.plot(mean_conf, share, marker="o", label="measured")
    for x, y, n in zip(mean_conf, share, count):
        ax.annotate(str(n), (x, y), fontsize=6, xytext=(3, -8), textcoords="offset points")
    ece = expected_calibration_error(confidence, right)
    ax.set(xlim=(0, 1), ylim=(0, 1.02), xlabel="confidence", ylabel="share of best places right",
           title=f"{title}\nECE {ece:.3f}")
    ax.title.set_fontsize(8)
    ax.grid(alpha=0.3)
    ax.legend(loc="upper left", fontsize=8)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return Path(path)
