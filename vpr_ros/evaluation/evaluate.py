"""
Recall and confidence of query frames against a map, through the same pipeline as the node.

Ground truth, report.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tqdm import tqdm

from vpr_ros.evaluation.calibration import expected_calibration_error, plot_reliability
from vpr_ros.evaluation.precision import plot_precision_recall, precision_recall, summary
from vpr_ros.evaluation.recall import positives_by_distance, positives_by_frame, recall_at_n
from vpr_ros.rerank import LocalFeatures, Reranker
from vpr_ros.inference.batch import extract_frames
from vpr_ros.inference.extractor import DescriptorExtractor
from vpr_ros.localizer import Localizer, LocalizerConfig
from vpr_ros.maps.mapdir import VprMap

RECALL_NS = (1, 5, 10, 20)


@dataclass
class Queries:
    """
    What the pipeline needs of the query frames.

    Extracted once and shared by every configuration.
    """

    descriptors: np.ndarray  # [Q, dim]
    local: list[LocalFeatures] | None = None  # per query, for re-ranking
    travelled_m: np.ndarray | None = None  # [Q] odometry distance since the previous query frame


@dataclass
class EvalResult:
    recalls: dict[int, float]
    ranked: np.ndarray  # [Q, K] map place indices, best first (-1 past the end)
    positives: list[np.ndarray]
    ground_truth: str  # how positives were defined
    confidence: np.ndarray  # [Q] calibrated confidence of the best match

    def correct_top1(self) -> np.ndarray:
        return np.array([row[0] in pos for row, pos in zip(self.ranked, self.positives)])


def ground_truth(
    vpr_map: VprMap, query_frames: list, threshold_m: float, frame_tolerance: int | None
) -> tuple[list[np.ndarray], str]:
    """
    Positives per query.

    Map places within ``threshold_m`` (UTM metres), or within ``frame_tolerance`` frames when given
    (place ids then count as frame indices: build such maps with --every-n 1).
    """
    if frame_tolerance is not None:
        q = np.array([f.index for f in query_frames])
        db = vpr_map.places.place_ids
        return positives_by_frame(q, db, frame_tolerance), f"within {frame_tolerance} frames"
    missing = sum(f.position is None for f in query_frames)
    db_xy = vpr_map.places.positions()[:, :2]
    if missing or np.isnan(db_xy).any():
        raise ValueError(
            f"{missing} query frames and {int(np.isnan(db_xy).any(1).sum())} map places have no"
            " position; give a pose topic / poses CSV, or use --frame-tolerance for aligned"
            " sequences"
        )
    q_xy = np.array([f.position[:2] for f in query_frames])
    # UTM coordinates are ~1e6: subtract a common origin so float32 keeps centimetres.
    origin = db_xy.mean(0)
    return (
        positives_by_distance(q_xy - origin, db_xy - origin, threshold_m),
        f"within {threshold_m:g} m",
    )


def evaluate(
    localizer: Localizer, queries: Queries, positives: list[np.ndarray], gt: str
) -> EvalResult:
    """
    Compute recall and confidence of ``localizer`` over the queries, frame by frame in order.

    Exactly as the node runs it (re-ranking, temporal filter and confidence included).
    """
    index_of = {int(pid): i for i, pid in enumerate(localizer.map.places.place_ids)}
    k = max(RECALL_NS)
    ranked = np.full((len(queries.descriptors), k), -1, np.int64)
    confidence = np.zeros(len(queries.descriptors))
    for q, descriptor in enumerate(queries.descriptors):
        m = localizer.match(
            descriptor,
            queries.local[q] if queries.local is not None else None,
            travelled_m=None if queries.travelled_m is None else float(queries.travelled_m[q]),
        )
        ids = [index_of[c.place_id] for c in m.candidates][:k]
        ranked[q, : len(ids)] = ids
        confidence[q] = m.confidence
    return EvalResult(recall_at_n(ranked, positives, RECALL_NS), ranked, positives, gt, confidence)


def extract_queries(
    frames: Iterable,
    extractor: DescriptorExtractor,
    reranker: Reranker | None = None,
    odometry_from_poses: bool = False,
    total: int | None = None,
) -> tuple[Queries, list]:
    """
    Descriptors (and a re-ranker's local features) of query frames, streaming (images are dropped).

    ``odometry_from_poses``: distances between consecutive frames' positions stand in for odometry
    (the query's own pose source: an upper bound on what wheel odometry gives).
    Returns (queries, the frames without their images).
    """
    if reranker is None:
        descriptors, kept = extract_frames(frames, extractor, total=total, desc="queries")
        local = None
    else:
        rows, local, kept = [], [], []
        for f in tqdm(
            frames,
            total=total,
            desc=f"queries + {reranker.name} features",
            unit="img",
            dynamic_ncols=True,
        ):
            d, lf = reranker.extract_query(f.image, extractor)
            f.image = None
            rows.append(d)
            local.append(lf)
            kept.append(f)
        descriptors = np.stack(rows) if rows else np.zeros((0, extractor.dim), np.float32)
    travelled = None
    if odometry_from_poses:
        xy = np.array(
            [f.position[:2] if f.position is not None else (np.nan, np.nan) for f in kept],
            dtype=np.float64,
        )
        travelled = (
            np.concatenate([[0.0], np.linalg.norm(np.diff(xy, axis=0), axis=1)])
            if len(xy)
            else np.zeros(0)
        )
    return Queries(np.asarray(descriptors, dtype=np.float32), local, travelled), kept


def file_name(row: str) -> str:
    """Return a file name for a configuration's ``row_name`` ("baseline + hmm": baseline_hmm)."""
    return row.replace(" + ", "_")


def row_name(model: str, rerank: str, temporal: str) -> str:
    return (
        model
        + ("" if rerank == "none" else f" + {rerank}")
        + ("" if temporal == "none" else f" + {temporal}")
    )


def run_configurations(
    vpr_map: VprMap,
    extractor: DescriptorExtractor | None,
    queries: Queries,
    positives: list[np.ndarray],
    gt: str,
    configs: list[LocalizerConfig],
) -> dict[str, tuple[LocalizerConfig, EvalResult]]:
    """One evaluation per configuration, named by ``row_name``."""
    out = {}
    for config in configs:
        localizer = Localizer(vpr_map, extractor, config)
        rerank = localizer.reranker.name if localizer.reranker is not None else "none"
        out[row_name(vpr_map.model["name"], rerank, config.temporal)] = (
            config,
            evaluate(localizer, queries, positives, gt),
        )
    return out


def report_rows(results: dict[str, tuple[LocalizerConfig, EvalResult]]) -> dict[str, dict]:
    """
    Per configuration.

    Recall@N and the confidence figures (AUC-PR, R@100P, EP, pose-prior precision/fraction,
    expected calibration error).
    """
    return {name: {"recall": {f"R@{n}": round(v, 4) for n, v in r.recalls.items()},
                   **summary(r.confidence, r.correct_top1(), config.min_confidence),
                   "expected_calibration_error": round(
                       expected_calibration_error(r.confidence, r.correct_top1()), 4)}
            for name, (config, r) in results.items()}


def write_report(
    results: dict[str, tuple[LocalizerConfig, EvalResult]],
    ground_truth: str,
    queries: int,
    out_dir: Path,
    extra: dict | None = None,
) -> list[Path]:
    """
    Write the report into ``out_dir``.

    results.json (every configuration), recall.png, precision_recall.png and a reliability
    diagram of each configuration's confidence (reliability_<configuration>.png).
    """
    from vpr_ros.evaluation.plots import plot_recall_curve

    out_dir.mkdir(parents=True, exist_ok=True)
    json_path = out_dir / "results.json"
    document = {
        "ground_truth": ground_truth,
        "queries": queries,
        "configurations": report_rows(results),
        **(extra or {}),
    }
    json_path.write_text(json.dumps(document, indent=2) + "\n")
    recall_png = plot_recall_curve(
        {name: r.recalls for name, (_, r) in results.items()}, out_dir / "recall.png", ground_truth
    )
    pr_png = plot_precision_recall(
        {
            name: precision_recall(r.confidence, r.correct_top1())
            for name, (_, r) in results.items()
        },
        out_dir / "precision_recall.png",
        f"best match right ({ground_truth})",
    )
    reliability_pngs = [
        plot_reliability(r.confidence, r.correct_top1(),
                         out_dir / f"reliability_{file_name(name)}.png",
                         f"{name}: best match right ({ground_truth})")
        for name, (_, r) in results.items()
    ]
    return [json_path, recall_png, pr_png, *reliability_pngs]


def format_table(rows: dict[str, dict]) -> str:
    """
    Markdown table of ``report_rows``.

    Recall@N, then precision and fraction of pose priors, AUC-PR, EP, ECE.
    """
    ns = list(next(iter(rows.values()))["recall"]) if rows else []
    header = (
        "| configuration | "
        + " | ".join(ns)
        + " | prior precision | prior fraction | AUC-PR | EP | ECE |"
    )
    lines = [header, "|" + "---|" * (len(ns) + 6)]
    for name, r in rows.items():
        precision = (
            "-" if r["pose_prior_precision"] is None else f"{r['pose_prior_precision']:.3f}"
        )
        lines.append(
            f"| {name} | "
            + " | ".join(f"{r['recall'][n]:.3f}" for n in ns)
            + f" | {precision} | {r['pose_prior_fraction']:.3f} | {r['auc_pr']:.3f} |"
            f" {r['extended_precision']:.3f} | {r['expected_calibration_error']:.3f} |"
        )
    return "\n".join(lines)
