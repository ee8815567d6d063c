"""
Precision and recall of confident matches: which best matches to trust, at what confidence.

Each query has one best match, right or wrong, and a confidence. Accepting the matches with
confidence >= t gives, as in VPR-Bench (Zaffar et al., IJCV 2021):
    precision(t) = right accepted / accepted
    recall(t)    = right accepted / queries that have a true place in the map
The curve runs over every distinct confidence, highest first, so its first point is the
most confident match alone (the lowest recall) and its last accepts every match.
Extended Precision (VPR-Bench) = (precision at the lowest recall + recall at 100 % precision) / 2.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np


@dataclass
class PrecisionRecall:
    thresholds: np.ndarray  # distinct confidences, descending
    precision: np.ndarray
    recall: np.ndarray

    @property
    def auc(self) -> float:
        """Area under the curve (trapezoids), from recall 0 at the first point's precision."""
        r = np.concatenate([[0.0], self.recall])
        p = np.concatenate([self.precision[:1], self.precision])
        return float(np.sum(np.diff(r) * (p[1:] + p[:-1]) / 2))

    @property
    def recall_at_full_precision(self) -> float:
        """Highest recall with no wrong match accepted (0 when the most confident one is wrong)."""
        full = self.precision >= 1.0
        return float(self.recall[full].max()) if full.any() else 0.0

    @property
    def extended_precision(self) -> float:
        return (float(self.precision[0]) + self.recall_at_full_precision) / 2


def precision_recall(
    confidence: np.ndarray, correct: np.ndarray, has_positive: np.ndarray | None = None
) -> PrecisionRecall:
    """
    Compute the curve from per-query confidence [Q] and whether the best match is right [Q].

    ``has_positive`` [Q]: whether the query has any true place in the map (default: all); queries
    without one count in no recall denominator, and their accepted matches are wrong.
    """
    confidence = np.asarray(confidence, dtype=np.float64)
    correct = np.asarray(correct, dtype=bool)
    if confidence.shape != correct.shape or confidence.ndim != 1 or len(confidence) == 0:
        raise ValueError(
            f"confidence {confidence.shape} and correct {correct.shape} must be equal, non-empty"
            " 1-D arrays"
        )
    positives = len(correct) if has_positive is None else int(np.count_nonzero(has_positive))
    if positives == 0:
        raise ValueError("no query has a true place in the map: recall is undefined")
    order = np.argsort(-confidence, kind="stable")
    conf, right = confidence[order], correct[order]
    true_pos = np.cumsum(right)
    accepted = np.arange(1, len(conf) + 1)
    # One point per distinct confidence: its last row accepts every match at that confidence.
    last = np.flatnonzero(np.r_[conf[1:] != conf[:-1], True])
    return PrecisionRecall(conf[last], true_pos[last] / accepted[last], true_pos[last] / positives)


@dataclass
class OperatingPoint:
    min_confidence: float
    precision: float  # of the accepted matches (NaN when none is accepted)
    accepted_fraction: float  # frames that get a pose prior


def at_min_confidence(
    confidence: np.ndarray, correct: np.ndarray, min_confidence: float
) -> OperatingPoint:
    """
    Precision of the matches the node would publish as pose priors.

    And the share of frames that get one.
    """
    confidence = np.asarray(confidence, dtype=np.float64)
    accepted = confidence >= min_confidence
    n = int(accepted.sum())
    precision = float(np.asarray(correct, dtype=bool)[accepted].mean()) if n else float("nan")
    return OperatingPoint(min_confidence, precision, n / len(confidence))


def lowest_threshold_for_precision(curve: PrecisionRecall, target: float) -> float | None:
    """
    Return the lowest confidence threshold whose accepted matches reach ``target`` precision.

    None if none does.
    """
    ok = curve.precision >= target
    return float(curve.thresholds[ok].min()) if ok.any() else None


def summary(confidence: np.ndarray, correct: np.ndarray, min_confidence: float) -> dict:
    """
    Return the numbers `vpr-ros eval` reports.

    AUC-PR, Recall@100% precision, Extended Precision, and the precision / pose-prior fraction at
    ``min_confidence``.
    """
    curve = precision_recall(confidence, correct)
    point = at_min_confidence(confidence, correct, min_confidence)
    return {
        "auc_pr": round(curve.auc, 4),
        "recall_at_100_precision": round(curve.recall_at_full_precision, 4),
        "extended_precision": round(curve.extended_precision, 4),
        "min_confidence": min_confidence,
        "pose_prior_precision": None if np.isnan(point.precision) else round(point.precision, 4),
        "pose_prior_fraction": round(point.accepted_fraction, 4),
    }


def plot_precision_recall(curves: dict[str, PrecisionRecall], path: Path, title: str = "") -> Path:
    """One precision-recall curve per method (PNG), in the style of the recall plots."""
    from vpr_ros.evaluation.plots import plt

    fig, ax = plt.subplots(figsize=(5, 3.6), dpi=120)
    for name, c in curves.items():
        ax.plot(
            c.recall, c.precision, label=f"{name} (AUC {c.auc:.2f}, EP {c.extended_precision:.2f})"
        )
    ax.set_xlabel("recall")
    ax.set_ylabel("precision")
    ax.set_xlim(0, 1.0)
    ax.set_ylim(0, 1.02)
    ax.grid(alpha=0.3)
    ax.set_title(title or "precision-recall over confidence")
    ax.legend(loc="lower left", fontsize=7)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return Path(path)
