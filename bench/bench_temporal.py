"""
Recall of the temporal filters through the shipped pipeline.

Plain retrieval vs SeqSLAM vs the place HMM, on every data set of issue 10, each frame through
``Localizer.match`` (the node's code) against a map written with ``write_map`` (exact search in
the model's own space, no PCA, so that only the filters differ).

    .venv/bin/python bench/bench_temporal.py [--cache DIR] [--refresh]

Data sets (descriptors are cached in --cache; --refresh recomputes them):
- nordland: all 3576 winter queries against the 3576 summer places
  (../shared/data/nordland_trimmed), right within 1 frame; the map has no positions, so the HMM
  moves along place indices.
- demo: the synthetic demo route (`vpr_harness.demo.route.write_demo_bags`, JPEG bags), map
  keyframes every 2 m as `make demo` builds them, right within 10 m; the HMM gets odometry from the
  query bag's /odom (row "hmm+odom") and, separately, nothing (row "hmm", speed prior only).
- gardens: the Gardens Point sample (../shared/data/gardens_point_sample), day queries in order
  against the night map, right at the exact place (R@1 within +-1 printed beside it).
- raw_pixels: the demo route with the `raw-pixels` model.
Every data set also runs the HMM on its queries in a random order (row "hmm, shuffled"): frames
with no sequential structure, where the filter must leave the retrieval's answer alone.
The Tokyo pair (one query, a one-image map) has no sequence: the filter does not apply there.

Confidence is the shipped model's (``vpr_ros.confidence.DEFAULT_MODELS``); the models refit on
Nordland are printed for comparison. Ends with one line
`nordland_r1=... demo_r1=... gardens_r1=... raw_pixels_r1=... nordland_plain_r1=... ...` (the
HMM without odometry, the node's default when no odom_topic is set, and plain retrieval).
"""

from __future__ import annotations

import argparse
import math
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

import common
from vpr_ros.confidence import (
    DEFAULT_MIN_CONFIDENCE,
    FEATURES_PLAIN,
    FEATURES_TEMPORAL,
    fit_confidence,
    frame_features,
)
from vpr_ros.evaluation.precision import (
    at_min_confidence,
    lowest_threshold_for_precision,
    plot_precision_recall,
    precision_recall,
)
from vpr_ros.evaluation.recall import positives_by_distance, positives_by_frame, recall_at_n
from vpr_ros.search.faiss_index import IndexConfig
from vpr_ros.temporal.seqslam import SequenceConfig
from vpr_ros.localizer import Localizer, LocalizerConfig
from vpr_ros.maps.mapdir import VprMap, load_map, write_map
from vpr_ros.maps.places import Place

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"
DEMO_MIN_DISTANCE_M = 2.0  # `make demo` (--min-distance) default
DEMO_THRESHOLD_M = 10.0
SEQSLAM_LENGTH = 10


@dataclass
class Dataset:
    name: str
    map_descriptors: np.ndarray  # [N, D], L2-normalised
    map_xy: np.ndarray | None  # [N, 2] metres, or None for a map without positions
    query_descriptors: np.ndarray  # [Q, D], in driving order
    positives: list[np.ndarray]
    travelled_m: np.ndarray | None  # [Q] odometry distance since the previous query frame
    ground_truth: str
    positives_loose: list[np.ndarray] | None = None  # Gardens Point: within +-1 place
    model: str = "baseline"
    query_xy: np.ndarray | None = None  # [Q, 2] metres where the queries have positions


def _extract_folder(folder: Path, model: str) -> np.ndarray:
    from vpr_ros.inference.factory import create_extractor
    from vpr_ros.inference.batch import extract_frames
    from vpr_ros.maps.sources import FolderSource

    source = FolderSource(folder)
    descriptors, _ = extract_frames(
        source, create_extractor(model), total=len(source), desc=f"{folder.name} ({model})"
    )
    return descriptors


def _cached(cache: Path, name: str, refresh: bool, compute) -> dict:
    path = cache / f"{name}.npz"
    if path.exists() and not refresh:
        return dict(np.load(path, allow_pickle=False))
    arrays = compute()
    cache.mkdir(parents=True, exist_ok=True)
    np.savez(path, **arrays)
    return arrays


def nordland(cache: Path, refresh: bool) -> Dataset:
    root = SHARED / "nordland_trimmed"
    a = _cached(
        cache,
        "nordland_baseline",
        refresh,
        lambda: {
            "map": _extract_folder(root / "summer", "baseline"),
            "query": _extract_folder(root / "winter", "baseline"),
        },
    )
    n = len(a["map"])
    return Dataset(
        "nordland",
        a["map"],
        None,
        a["query"],
        positives_by_frame(np.arange(len(a["query"])), np.arange(n), 1),
        None,
        "within 1 frame",
    )


def gardens(cache: Path, refresh: bool) -> Dataset:
    root = SHARED / "gardens_point_sample"
    a = _cached(
        cache,
        "gardens_baseline",
        refresh,
        lambda: {
            "map": _extract_folder(root / "night", "baseline"),
            "query": _extract_folder(root / "day", "baseline"),
        },
    )
    q = np.arange(len(a["query"]))
    return Dataset(
        "gardens",
        a["map"],
        None,
        a["query"],
        positives_by_frame(q, np.arange(len(a["map"])), 0),
        None,
        "exact place",
        positives_by_frame(q, np.arange(len(a["map"])), 1),
    )


def _demo_bags(cache: Path) -> tuple[Path, Path]:
    from vpr_harness.demo.route import write_demo_bags

    bags = cache / "demo_bags"
    if (bags / "map").exists() and (bags / "query").exists():
        return bags / "map", bags / "query"
    return write_demo_bags(bags, compressed=True)


def _demo_arrays(cache: Path, model: str) -> dict:
    from vpr_harness.demo.route import COMPRESSED_CAMERA_TOPIC, GPS_TOPIC, ODOM_TOPIC
    from vpr_ros.inference.factory import create_extractor
    from vpr_ros.inference.batch import extract_frames
    from vpr_ros.maps.sources import BagSource

    map_bag, query_bag = _demo_bags(cache)
    extractor = create_extractor(model)
    # The same keyframes and query frames as `make demo` (tools/vpr_harness/demo/run.py).
    source = BagSource(
        [map_bag], COMPRESSED_CAMERA_TOPIC, GPS_TOPIC, min_distance_m=DEMO_MIN_DISTANCE_M
    )
    map_desc, map_frames = extract_frames(
        source, extractor, total=len(source), desc=f"demo map ({model})"
    )
    source = BagSource([query_bag], COMPRESSED_CAMERA_TOPIC, GPS_TOPIC, min_distance_m=0.0)
    query_desc, query_frames = extract_frames(
        source, extractor, total=len(source), desc=f"demo queries ({model})"
    )
    odom = [
        f.position[:2]
        for f in BagSource([query_bag], COMPRESSED_CAMERA_TOPIC, ODOM_TOPIC, min_distance_m=0.0)
    ]
    return {"map": map_desc, "query": query_desc,
            "map_xy": np.array([f.position[:2] for f in map_frames]),
            "query_xy": np.array([f.position[:2] for f in query_frames]),
            "odom_xy": np.array(odom)}


def demo(cache: Path, refresh: bool, model: str = "baseline") -> Dataset:
    a = _cached(cache, f"demo_{model}", refresh, lambda: _demo_arrays(cache, model))
    origin = a["map_xy"].mean(0)
    positives = positives_by_distance(
        a["query_xy"] - origin, a["map_xy"] - origin, DEMO_THRESHOLD_M
    )
    travelled = np.concatenate([[0.0], np.linalg.norm(np.diff(a["odom_xy"], axis=0), axis=1)])
    name = "demo" if model == "baseline" else "raw_pixels"
    return Dataset(
        name,
        a["map"],
        a["map_xy"],
        a["query"],
        positives,
        travelled,
        f"within {DEMO_THRESHOLD_M:g} m",
        model=model,
        query_xy=a["query_xy"],
    )


def seqslam_config(d: Dataset) -> SequenceConfig:
    """
    Return the SeqSLAM settings the demo and `vpr-ros eval` use.

    Velocities from the routes where known.
    """
    if d.map_xy is None:
        return SequenceConfig(length=SEQSLAM_LENGTH)
    from vpr_harness.demo.run import _sequence_config

    # only step lengths matter
    query_xy = np.cumsum(np.c_[d.travelled_m, np.zeros_like(d.travelled_m)], axis=0)
    return _sequence_config(query_xy, d.map_xy)


def write_dataset_map(d: Dataset, work: Path) -> VprMap:
    """Write the data set's map places and cached descriptors as a map directory; load it."""
    from vpr_ros.inference.factory import create_extractor

    xy = d.map_xy if d.map_xy is not None else np.full((len(d.map_descriptors), 2), math.nan)
    places = [Place(i, i, float(x), float(y)) for i, (x, y) in enumerate(xy)]
    path = write_map(
        work / d.name,
        d.map_descriptors,
        places,
        create_extractor(d.model).describe(),
        IndexConfig("flat", pca_dim=None),  # exact search: the filters are compared, not PCA
        [{"source": f"bench_temporal {d.name}"}],
    )
    return load_map(path)


@dataclass
class Run:
    ranked: np.ndarray  # [Q, 5] map place indices (place ids are indices in these maps)
    confidence: np.ndarray  # [Q] the shipped confidence of the best match
    features: dict[str, np.ndarray]  # per-frame confidence features (for the refit)
    resets: int = 0
    applied: np.ndarray | None = None  # [Q] the frame was answered by the filter's ranking
    ms_per_frame: float = math.nan  # median per-frame cost of the temporal stage


def run(
    vpr_map: VprMap,
    d: Dataset,
    config: LocalizerConfig,
    order: np.ndarray,
    odometry: bool = False,
    margins: np.ndarray | None = None,
) -> Run:
    """
    Run the queries in ``order``, frame by frame through ``Localizer.match``.

    ``margins``: the plain run's confidence margins in the same order (the temporal features
    need them).
    """
    localizer = Localizer(vpr_map, None, config)
    ranked = np.full((len(order), 5), -1)
    confidence, margin, support = (np.zeros(len(order)) for _ in range(3))
    resets, applied, ms = 0, np.zeros(len(order), bool), []
    for q, i in enumerate(order):
        m = localizer.match(
            d.query_descriptors[i], travelled_m=float(d.travelled_m[i]) if odometry else None
        )
        ids = [c.place_id for c in m.candidates]
        ranked[q, : min(5, len(ids))] = ids[:5]
        confidence[q] = m.confidence
        if config.temporal == "none":
            scores = np.array([c.score for c in m.candidates])
            margin[q] = frame_features(scores, np.array(ids), d.map_xy)["margin"]
        if config.temporal == "hmm":
            support[q] = m.temporal.support
            resets += m.temporal.reset
            applied[q] = m.temporal.applied
            ms.append(m.latency_ms.temporal)
    features = (
        {"margin": margin}
        if config.temporal == "none"
        else {"margin": margins, "support": support} if margins is not None else {}
    )
    hmm = config.temporal == "hmm"
    return Run(
        ranked,
        confidence,
        features,
        resets - 1 if hmm else 0,
        applied if hmm else None,
        float(np.median(ms)) if ms else math.nan,
    )


def correct_top1(ranked: np.ndarray, positives: list[np.ndarray]) -> np.ndarray:
    return np.array([r[0] in p for r, p in zip(ranked, positives)])


def runs_of(d: Dataset, vpr_map: VprMap) -> dict[str, tuple[Run, list[np.ndarray]]]:
    """Every configuration on one data set: name -> (run, positives in the run's query order)."""
    in_order = np.arange(len(d.query_descriptors))
    shuffled = np.random.default_rng(0).permutation(len(d.query_descriptors))
    top_k = min(10, len(vpr_map))
    plain = run(vpr_map, d, LocalizerConfig(top_k=top_k, temporal="none"), in_order)
    out = {"plain": (plain, d.positives)}
    seqslam = LocalizerConfig(top_k=top_k, temporal="seqslam", sequence=seqslam_config(d))
    out[f"SeqSLAM {SEQSLAM_LENGTH}"] = (run(vpr_map, d, seqslam, in_order), d.positives)
    hmm = LocalizerConfig(top_k=top_k, temporal="hmm")
    out["hmm"] = (run(vpr_map, d, hmm, in_order, margins=plain.features["margin"]), d.positives)
    if d.travelled_m is not None:
        out["hmm+odom"] = (
            run(vpr_map, d, hmm, in_order, True, plain.features["margin"]),
            d.positives,
        )
    out["hmm, shuffled"] = (
        run(vpr_map, d, hmm, shuffled, margins=plain.features["margin"][shuffled]),
        [d.positives[i] for i in shuffled],
    )
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.strip().splitlines()[0])
    parser.add_argument(
        "--cache",
        type=Path,
        default=Path.home() / ".cache" / "vpr_ros" / "bench_temporal",
        help="descriptor cache directory (default: %(default)s)",
    )
    parser.add_argument("--refresh", action="store_true", help="recompute the cached descriptors")
    parser.add_argument(
        "--min-confidence",
        type=float,
        default=DEFAULT_MIN_CONFIDENCE,
        help="pose-prior threshold (default: %(default)s)",
    )
    parser.add_argument("--out", type=Path, help="also write precision-recall PNGs here")
    a = parser.parse_args()
    common.print_machine()
    sets = [nordland(a.cache, a.refresh), demo(a.cache, a.refresh), gardens(a.cache, a.refresh),
            demo(a.cache, a.refresh, "raw-pixels")]
    runs: dict[str, dict[str, tuple[Run, list[np.ndarray]]]] = {}
    print("| data set | queries | places | method | R@1 | R@5 | resets | filter applied |"
          " temporal ms/frame |")
    print("|---|---|---|---|---|---|---|---|---|")
    with tempfile.TemporaryDirectory(prefix="vpr_bench_temporal_") as work:
        for d in sets:
            runs[d.name] = runs_of(d, write_dataset_map(d, Path(work)))
            for name, (r, positives) in runs[d.name].items():
                recall = recall_at_n(r.ranked, positives, (1, 5))
                extra = ""
                if d.positives_loose is not None and "shuffled" not in name:
                    loose = recall_at_n(r.ranked, d.positives_loose, (1,))[1]
                    extra = f" (R@1 within +-1: {loose:.3f})"
                hmm = name.startswith("hmm")
                print(
                    f"| {d.name} ({d.ground_truth}) | {len(d.query_descriptors)} |"
                    f" {len(d.map_descriptors)} | {name} | {recall[1]:.3f}{extra} |"
                    f" {recall[5]:.3f} | {r.resets if hmm else ''} |"
                    f" {f'{r.applied.mean():.2f}' if hmm else ''} |"
                    f" {f'{r.ms_per_frame:.2f}' if hmm else ''} |",
                    flush=True,
                )

    # The shipped confidence on every data set; models refit on Nordland printed beside it (the
    # temporal one on the frames the filter answered: elsewhere the plain model applies).
    fit_set = sets[0]
    for name, features in (("plain", FEATURES_PLAIN), ("hmm", FEATURES_TEMPORAL)):
        r, positives = runs[fit_set.name][name]
        rows = np.ones(len(r.ranked), bool) if r.applied is None else r.applied
        m = fit_confidence(
            {f: v[rows] for f, v in r.features.items()},
            correct_top1(r.ranked, positives)[rows],
            features,
        )
        print(
            f"confidence model ({name}) refit on {fit_set.name}: features {m.features} weights "
            f"{tuple(round(w, 4) for w in m.weights)} bias {m.bias:.4f}"
        )
    print(
        f"\n| data set | method | AUC-PR | R@100%P | EP | precision @ {a.min_confidence} |"
        " pose-prior fraction | lowest threshold for 99% precision | precision/fraction at 0.5,"
        " 0.8, 0.9, 0.95 |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    for d in sets:
        for name, (r, positives) in runs[d.name].items():
            right = correct_top1(r.ranked, positives)
            curve = precision_recall(r.confidence, right)
            point = at_min_confidence(r.confidence, right, a.min_confidence)
            t99 = lowest_threshold_for_precision(curve, 0.99)
            sweep = ", ".join(
                f"{t}: {p.precision:.3f}/{p.accepted_fraction:.2f}"
                for t in (0.5, 0.8, 0.9, 0.95)
                for p in [at_min_confidence(r.confidence, right, t)]
            )
            print(
                f"| {d.name} | {name} | {curve.auc:.3f} | {curve.recall_at_full_precision:.3f} |"
                f" {curve.extended_precision:.3f} | {point.precision:.3f} |"
                f" {point.accepted_fraction:.3f} | {'none' if t99 is None else f'{t99:.3f}'} |"
                f" {sweep} |"
            )
    if a.out:
        a.out.mkdir(parents=True, exist_ok=True)
        for d in sets:
            curves = {
                name: precision_recall(r.confidence, correct_top1(r.ranked, positives))
                for name, (r, positives) in runs[d.name].items()
            }
            plot = plot_precision_recall(
                curves, a.out / f"pr_{d.name}.png", f"{d.name}: precision-recall over confidence"
            )
            print(f"wrote {plot}")
    r1 = {
        (d.name, name): recall_at_n(runs[d.name][name][0].ranked, d.positives, (1,))[1]
        for d in sets
        for name in ("hmm", "plain")
    }
    print(
        " ".join(f"{d.name}_r1={r1[d.name, 'hmm']:.3f}" for d in sets)
        + " "
        + " ".join(f"{d.name}_plain_r1={r1[d.name, 'plain']:.3f}" for d in sets)
    )


if __name__ == "__main__":
    main()
