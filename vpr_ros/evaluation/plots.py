"""Pictures: the recall curve; matplotlib without a display (other plots import plt from here)."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only; no display on robots and CI
import matplotlib.pyplot as plt  # noqa: E402


def plot_recall_curve(
    curves: dict[str, dict[int, float]], path: Path, ground_truth: str = ""
) -> Path:
    fig, ax = plt.subplots(figsize=(5, 3.6), dpi=120)
    for name, recalls in curves.items():
        ns = sorted(recalls)
        ax.plot(ns, [recalls[n] for n in ns], marker="o", label=name)
    ax.set_xscale("log")
    ax.set_xticks(
        sorted({n for r in curves.values() for n in r}),
        labels=[str(n) for n in sorted({n for r in curves.values() for n in r})],
    )
    ax.set_xlabel("N (candidates)")
    ax.set_ylabel("Recall@N")
    ax.set_ylim(0, 1.02)
    ax.grid(alpha=0.3)
    ax.set_title(f"Recall@N ({ground_truth})" if ground_truth else "Recall@N")
    ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return Path(path)
