"""Pictures: recall curves and trajectories with matches coloured right or wrong."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only; no display on robots and CI
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402


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


def plot_trajectory_matches(
    map_xy: np.ndarray,
    query_xy: np.ndarray,
    matched_xy: np.ndarray,
    correct: np.ndarray,
    path: Path,
    title: str = "",
) -> Path:
    """
    Plot the map route in grey, query positions green (right) or red (wrong).

    Wrong ones are linked to their match.
    """
    origin = map_xy.mean(0)
    m, q, t = map_xy - origin, query_xy - origin, matched_xy - origin
    fig, ax = plt.subplots(figsize=(6, 6), dpi=120)
    ax.plot(m[:, 0], m[:, 1], color="0.7", lw=3, label="map route", zorder=1)
    wrong = ~correct
    for a, b in zip(q[wrong], t[wrong]):
        ax.plot([a[0], b[0]], [a[1], b[1]], color="tab:red", lw=0.5, alpha=0.5, zorder=2)
    ax.scatter(
        q[correct, 0],
        q[correct, 1],
        s=8,
        color="tab:green",
        label=f"right ({int(correct.sum())})",
        zorder=3,
    )
    ax.scatter(
        q[wrong, 0],
        q[wrong, 1],
        s=10,
        color="tab:red",
        marker="x",
        label=f"wrong ({int(wrong.sum())})",
        zorder=4,
    )
    ax.set_aspect("equal")
    ax.set_xlabel("east (m)")
    ax.set_ylabel("north (m)")
    ax.set_title(title)
    ax.legend(loc="best", fontsize=8)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return Path(path)
