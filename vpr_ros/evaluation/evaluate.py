"""Recall of query frames against a map: ground truth, ranking, sequence filter, report."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from vpr_ros.confidence import DEFAULT_MODELS, FEATURES_PLAIN, FEATURES_TEMPORAL, frame_features
from vpr_ros.evaluation.recall import positives_by_distance, positives_by_frame, recall_at_n
from vpr_ros.index.sequence import SequenceConfig, filter_sequence
from vpr_ros.index.temporal import Route, TemporalConfig, TemporalFilter
from vpr_ros.maps.mapdir import VprMap

RECALL_NS = (1, 5, 10, 20)


@dataclass
class EvalResult:
    recalls: dict[int, float]
    ranked: np.ndarray  # [Q, K] place indices, best first
    positives: list[np.ndarray]
    ground_truth: str  # how positives were defined
    confidence: np.ndarray | None = None  # [Q] calibrated confidence of the best match (not for SeqSLAM)

    def correct_top1(self) -> np.ndarray:
        return np.array([row[0] in pos for row, pos in zip(self.ranked, self.positives)])


def ground_truth(vpr_map: VprMap, query_frames: list, threshold_m: float, frame_tolerance: int | None) -> tuple[list[np.ndarray], str]:
    """Positives per query: map places within ``threshold_m`` (UTM metres), or within ``frame_tolerance``
    frames when given (place ids then count as frame indices: build such maps with --every-n 1)."""
    if frame_tolerance is not None:
        q = np.array([f.index for f in query_frames])
        db = np.array([p.place_id for p in vpr_map.places])
        return positives_by_frame(q, db, frame_tolerance), f"within {frame_tolerance} frames"
    missing = sum(f.position is None for f in query_frames)
    db_xy = np.array([p.position[:2] if p.position else (np.nan, np.nan) for p in vpr_map.places])
    if missing or np.isnan(db_xy).any():
        raise ValueError(f"{missing} query frames and {int(np.isnan(db_xy).any(1).sum())} map places have no position; "
                         "give a pose topic / poses CSV, or use --frame-tolerance for aligned sequences")
    q_xy = np.array([f.position[:2] for f in query_frames])
    # UTM coordinates are ~1e6: subtract a common origin so float32 keeps centimetres.
    origin = db_xy.mean(0)
    return positives_by_distance(q_xy - origin, db_xy - origin, threshold_m), f"within {threshold_m:g} m"


def map_positions_xy(vpr_map: VprMap) -> np.ndarray | None:
    """Place positions [N, 2] (map frame metres), or None for a map without them."""
    xy = np.array([p.position[:2] if p.position else (np.nan, np.nan) for p in vpr_map.places], dtype=np.float64)
    return None if np.isnan(xy).all() else xy


def evaluate(vpr_map: VprMap, query_descriptors: np.ndarray, positives: list[np.ndarray], gt: str,
             sequence: SequenceConfig | None = None, temporal: TemporalConfig | None = None,
             travelled_m: np.ndarray | None = None) -> EvalResult:
    """Recall of the plain ranking, of SeqSLAM (``sequence``) or of the place HMM (``temporal``, with
    odometry distances per query frame when given), run causally frame by frame as the node runs them."""
    k = min(max(RECALL_NS), len(vpr_map))
    confidence = None
    if temporal is not None:
        ranked, confidence = _temporal(vpr_map, query_descriptors, temporal, travelled_m, k)
    elif sequence is not None and sequence.length > 1:
        sims = np.asarray(query_descriptors @ np.asarray(vpr_map.descriptors).T, dtype=np.float32)
        ranked, _ = filter_sequence(sims, sequence, k)
    else:
        scores, ranked = vpr_map.index.search(query_descriptors, k)
        xy, model = map_positions_xy(vpr_map), DEFAULT_MODELS[FEATURES_PLAIN]
        confidence = np.array([model(**frame_features(s[i >= 0], i[i >= 0], xy)) for s, i in zip(scores, ranked)])
    return EvalResult(recall_at_n(ranked, positives, RECALL_NS), ranked, positives, gt, confidence)


def _temporal(vpr_map: VprMap, query_descriptors: np.ndarray, config: TemporalConfig, travelled_m: np.ndarray | None,
              k: int) -> tuple[np.ndarray, np.ndarray]:
    xy, model = map_positions_xy(vpr_map), DEFAULT_MODELS[FEATURES_TEMPORAL]
    f = TemporalFilter(Route.of_map(xy, len(vpr_map)), config)
    scores, ids = vpr_map.index.search(query_descriptors, min(config.candidates, len(vpr_map)))
    ranked, confidence = np.full((len(ids), k), -1, np.int64), np.zeros(len(ids))
    for q in range(len(ids)):
        keep = ids[q] >= 0
        r = f.push(ids[q][keep], scores[q][keep], None if travelled_m is None else float(travelled_m[q]), k)
        ranked[q, : len(r.place_ids)] = r.place_ids
        confidence[q] = model(**frame_features(scores[q][keep], ids[q][keep], xy, r))
    return ranked, confidence


def write_report(curves: dict[str, dict[int, float]], ground_truth: str, queries: int, out_dir: Path,
                 extra: dict | None = None) -> tuple[Path, Path]:
    """results.json and recall.png (one curve per method) in ``out_dir``."""
    from vpr_ros.evaluation.plots import plot_recall_curve

    out_dir.mkdir(parents=True, exist_ok=True)
    json_path = out_dir / "results.json"
    recall = {name: {f"R@{n}": round(r, 4) for n, r in rs.items()} for name, rs in curves.items()}
    json_path.write_text(json.dumps({"ground_truth": ground_truth, "queries": queries, "recall": recall, **(extra or {})}, indent=2) + "\n")
    png = plot_recall_curve(curves, out_dir / "recall.png", ground_truth)
    return json_path, png


def format_table(rows: dict[str, dict[int, float]]) -> str:
    ns = sorted({n for r in rows.values() for n in r})
    header = "| method | " + " | ".join(f"R@{n}" for n in ns) + " |"
    lines = [header, "|" + "---|" * (len(ns) + 1)]
    lines += [f"| {name} | " + " | ".join(f"{r[n]:.3f}" for n in ns) + " |" for name, r in rows.items()]
    return "\n".join(lines)
