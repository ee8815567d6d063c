"""The demo's trajectory: matches right or wrong, the off-map stretch, the jump, pose priors."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only; no display in CI
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402


def plot_trajectory(
    map_xy: np.ndarray,
    query_xy: np.ndarray,
    matched: dict[int, np.ndarray],
    right: dict[int, bool],
    off_map: np.ndarray,
    priors: dict[int, tuple[float, float, bool]],
    jumps: list[int],
    path: Path,
    title: str = "",
) -> Path:
    """
    Plot the map route in grey and each query frame where it was.

    Frames whose best match is right are green, wrong ones red and linked to their match;
    off-map frames (``off_map``: bool per frame) are ringed in orange; wrong pose priors are
    linked to where they said the robot was; each jump (index of the first frame after it) is a
    dashed arrow. ``matched``: frame -> best match's position; ``right``: frame -> whether it is;
    ``priors``: frame -> (x, y, right).
    """
    origin = map_xy.mean(0)
    m, q = map_xy - origin, query_xy - origin
    fig, ax = plt.subplots(figsize=(7, 6), dpi=120)
    ax.plot(m[:, 0], m[:, 1], color="0.7", lw=3, label="map drive", zorder=1)
    good = [i for i in matched if right[i]]
    bad = [i for i in matched if not right[i]]
    for i in bad:
        t = matched[i] - origin
        ax.plot([q[i, 0], t[0]], [q[i, 1], t[1]], color="tab:red", lw=0.4, alpha=0.4, zorder=2)
    ax.scatter(q[good, 0], q[good, 1], s=8, color="tab:green", zorder=3,
               label=f"best match right ({len(good)})")
    ax.scatter(q[bad, 0], q[bad, 1], s=10, color="tab:red", marker="x", zorder=4,
               label=f"best match wrong ({len(bad)})")
    off = np.flatnonzero(off_map)
    off_priors = sum(i in priors for i in off)
    ax.scatter(q[off, 0], q[off, 1], s=40, facecolors="none", edgecolors="tab:orange", lw=0.8,
               zorder=5, label=f"off the map ({len(off)} frames, {off_priors} pose priors)")
    wrong = [i for i, (_, _, ok) in priors.items() if not ok]
    for i in wrong:
        p = np.array(priors[i][:2]) - origin
        ax.plot([q[i, 0], p[0]], [q[i, 1], p[1]], color="black", lw=1.0, zorder=6)
    said = np.array([priors[i][:2] for i in wrong]).reshape(-1, 2) - origin
    ax.scatter(said[:, 0], said[:, 1], s=30, color="black", marker="v", zorder=7,
               label=f"wrong pose priors ({len(wrong)} of {len(priors)})")
    for k, j in enumerate(jumps):
        ax.annotate("", xy=q[j], xytext=q[j - 1], zorder=8,
                    arrowprops={"arrowstyle": "->", "ls": "--", "color": "tab:purple", "lw": 1.5})
        ax.plot([], [], ls="--", color="tab:purple", label="carried (jump)" if k == 0 else None)
    ax.set_aspect("equal")
    ax.set_xlabel("east (m)")
    ax.set_ylabel("north (m)")
    ax.set_title(title)
    ax.legend(loc="best", fontsize=7)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return Path(path)
