"""
Recall of the temporal filters.

Plain retrieval vs SeqSLAM vs the place HMM, on every data set of issue 10.

    .venv/bin/python bench/bench_temporal.py [--cache DIR] [--refresh]

Data sets (descriptors are cached in --cache; --refresh recomputes them):
- nordland: all 3576 winter queries against the 3576 summer places
  (../shared/data/nordland_trimmed), right within 1 frame; the map has no positions, so the HMM
  moves along place indices.
- demo: the synthetic demo route (`vpr_ros.demo.route.write_demo_bags`, JPEG bags), map keyframes
  every 2 m as `vpr-ros demo` builds them, right within 10 m; the HMM gets odometry from the query
  bag's /odom (row "hmm+odom") and, separately, nothing (row "hmm", speed prior only).
- gardens: the Gardens Point sample (../shared/data/gardens_point_sample), day queries in order
  against the night map, right at the exact place (R@1 within +-1 printed beside it).
- raw_pixels: the demo route with the `raw-pixels` model.

Every filter runs causally, frame by frame, exactly as the node runs it. Ends with one line
`nordland_r1=... demo_r1=... gardens_r1=... raw_pixels_r1=...` (the HMM without odometry, the
node's default when no odom_topic is set).
"""

from __future__ import annotations

import argparse
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

import common  # noqa: F401  (puts the repository on sys.path)
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
from vpr_ros.evaluation.recall import (
    positives_by_distance,
    positives_by_frame,
    rank_database,
    recall_at_n,
)
from vpr_ros.index.sequence import SequenceConfig, filter_sequence
from vpr_ros.index.temporal import Route, TemporalConfig, TemporalFilter

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"
DEMO_MIN_DISTANCE_M = 2.0  # `vpr-ros demo --min-distance` default
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


def _extract_folder(folder: Path, model: str) -> np.ndarray:
    from vpr_ros.inference.factory import create_extractor
    from vpr_ros.maps.build import extract_frames
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
    from vpr_ros.demo.route import write_demo_bags

    bags = cache / "demo_bags"
    if (bags / "map").exists() and (bags / "query").exists():
        return bags / "map", bags / "query"
    return write_demo_bags(bags, compressed=True)


def _demo_arrays(cache: Path, model: str) -> dict:
    from vpr_ros.demo.route import COMPRESSED_CAMERA_TOPIC, GPS_TOPIC, ODOM_TOPIC
    from vpr_ros.inference.factory import create_extractor
    from vpr_ros.maps.build import extract_frames
    from vpr_ros.maps.sources import BagSource

    map_bag, query_bag = _demo_bags(cache)
    extractor = create_extractor(model)
    # The same keyframes and query frames as `vpr-ros demo` (vpr_ros/demo/run.py).
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
    )


def seqslam_config(d: Dataset) -> SequenceConfig:
    """
    Return the SeqSLAM settings `vpr-ros demo` / `vpr-ros eval` use.

    Velocities from the routes where known.
    """
    if d.map_xy is None:
        return SequenceConfig(length=SEQSLAM_LENGTH)
    from vpr_ros.demo.run import _sequence_config

    # only step lengths matter
    query_xy = np.cumsum(np.c_[d.travelled_m, np.zeros_like(d.travelled_m)], axis=0)
    return _sequence_config(query_xy, d.map_xy)


@dataclass
class Run:
    ranked: np.ndarray  # [Q, 5]
    features: dict[str, np.ndarray]  # per-frame confidence features
    resets: int = 0
    ms_per_frame: float = 0.0


def run_plain(d: Dataset, scores: np.ndarray, ids: np.ndarray) -> Run:
    rows = [frame_features(s, i, d.map_xy) for s, i in zip(scores, ids)]
    return Run(ids[:, :5], {"margin": np.array([r["margin"] for r in rows])})


def run_hmm(
    d: Dataset, scores: np.ndarray, ids: np.ndarray, config: TemporalConfig, odometry: bool
) -> Run:
    """Frame by frame, exactly as the node would call it."""
    route = Route.of_map(d.map_xy, len(d.map_descriptors))
    f = TemporalFilter(route, config)
    ranked = np.full((len(ids), 5), -1)
    rows, resets, elapsed = [], 0, 0.0
    for q in range(len(ids)):
        start = time.perf_counter()
        r = f.push(ids[q, : config.candidates], scores[q, : config.candidates],
                   float(d.travelled_m[q]) if odometry else None, k=5)
        elapsed += time.perf_counter() - start
        ranked[q, : len(r.place_ids)] = r.place_ids
        rows.append(frame_features(scores[q], ids[q], d.map_xy, r))
        resets += r.reset
    features = {name: np.array([row[name] for row in rows]) for name in FEATURES_TEMPORAL}
    return Run(ranked, features, resets - 1, elapsed / len(ids) * 1e3)


def map_size_cost(config: TemporalConfig, frames: int = 300) -> tuple[float, float]:
    """
    Time (ms per frame) the same candidate stream takes on a 1k and a 1M place map.

    Positions: place indices.
    """
    rng = np.random.default_rng(0)
    truth = 100 + np.rint(np.arange(frames) * 0.8).astype(np.int64)
    ids = rng.integers(0, 1000, size=(frames, config.candidates))
    hit = rng.uniform(size=frames) < 0.5
    ids[hit, 0] = truth[hit]
    scores = np.sort(rng.uniform(0.3, 0.8, size=ids.shape))[:, ::-1]
    times = []
    for size, shift in ((1_000, 0), (1_000_000, 500_000)):
        f = TemporalFilter(Route(np.arange(float(size))), config)
        start = time.perf_counter()
        for i, sc in zip(ids, scores):
            f.push(i + shift, sc)
        times.append((time.perf_counter() - start) / frames * 1e3)
    return times[0], times[1]


def correct_top1(ranked: np.ndarray, positives: list[np.ndarray]) -> np.ndarray:
    return np.array([r[0] in p for r, p in zip(ranked, positives)])


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
    config = TemporalConfig()
    sets = [nordland(a.cache, a.refresh), demo(a.cache, a.refresh), gardens(a.cache, a.refresh),
            demo(a.cache, a.refresh, "raw-pixels")]
    runs: dict[tuple[str, str], Run] = {}
    print("| data set | queries | places | method | R@1 | R@5 | resets | ms/frame |")
    print("|---|---|---|---|---|---|---|---|")
    for d in sets:
        k = min(max(config.candidates, 5), len(d.map_descriptors))
        ranked = rank_database(d.query_descriptors, d.map_descriptors, k)
        scores = np.take_along_axis(d.query_descriptors @ d.map_descriptors.T, ranked, axis=1)
        sims = np.asarray(d.query_descriptors @ d.map_descriptors.T, dtype=np.float32)
        seq, _ = filter_sequence(sims, seqslam_config(d), 5)
        rows = {"plain": run_plain(d, scores, ranked), f"SeqSLAM {SEQSLAM_LENGTH}": Run(seq, {}),
                "hmm": run_hmm(d, scores, ranked, config, odometry=False)}
        if d.travelled_m is not None:
            rows["hmm+odom"] = run_hmm(d, scores, ranked, config, odometry=True)
        for name, run in rows.items():
            runs[d.name, name] = run
            r = recall_at_n(run.ranked, d.positives, (1, 5))
            extra = ""
            if d.positives_loose is not None:
                extra = (
                    f" (R@1 within +-1: {recall_at_n(run.ranked, d.positives_loose, (1,))[1]:.3f})"
                )
            resets = run.resets if name.startswith("hmm") else ""
            ms = f"{run.ms_per_frame:.2f}" if name.startswith("hmm") else ""
            print(
                f"| {d.name} ({d.ground_truth}) | {len(d.query_descriptors)} |"
                f" {len(d.map_descriptors)} | {name} | {r[1]:.3f}{extra} | {r[5]:.3f} | {resets} |"
                f" {ms} |"
            )

    # Confidence: fitted on Nordland only, checked on the others.
    fit_set = sets[0]
    models = {
        name: fit_confidence(
            runs[fit_set.name, name].features,
            correct_top1(runs[fit_set.name, name].ranked, fit_set.positives),
            features,
        )
        for name, features in (("plain", FEATURES_PLAIN), ("hmm", FEATURES_TEMPORAL))
    }
    for name, m in models.items():
        print(
            f"confidence model ({name}), fitted on {fit_set.name}: features {m.features} weights "
            f"{tuple(round(w, 4) for w in m.weights)} bias {m.bias:.4f}"
        )
    print(
        f"\n| data set | method | AUC-PR | R@100%P | EP | precision @ {a.min_confidence} |"
        " pose-prior fraction | lowest threshold for 99% precision | precision/fraction at 0.5,"
        " 0.8, 0.9, 0.95 |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    for d in sets:
        for name, run in ((n, r) for (s, n), r in runs.items() if s == d.name and r.features):
            model = models["plain" if name == "plain" else "hmm"]
            conf = model.batch(run.features)
            right = correct_top1(run.ranked, d.positives)
            curve = precision_recall(conf, right)
            point = at_min_confidence(conf, right, a.min_confidence)
            t99 = lowest_threshold_for_precision(curve, 0.99)
            tag = " (fit)" if d is fit_set else ""
            sweep = ", ".join(
                f"{t}: {p.precision:.3f}/{p.accepted_fraction:.2f}"
                for t in (0.5, 0.8, 0.9, 0.95)
                for p in [at_min_confidence(conf, right, t)]
            )
            print(
                f"| {d.name}{tag} | {name} | {curve.auc:.3f} |"
                f" {curve.recall_at_full_precision:.3f} | {curve.extended_precision:.3f} |"
                f" {point.precision:.3f} | {point.accepted_fraction:.3f} |"
                f" {'none' if t99 is None else f'{t99:.3f}'} | {sweep} |"
            )
    small, big = map_size_cost(config)
    print(
        f"\nper-frame cost, same candidates: 1k places {small:.2f} ms, 1M places {big:.2f} ms"
        f" (ratio {big / small:.2f})"
    )
    if a.out:
        a.out.mkdir(parents=True, exist_ok=True)
        for d in sets:
            curves = {}
            for (s_name, name), run in runs.items():
                if s_name == d.name and run.features:
                    model = models["plain" if name == "plain" else "hmm"]
                    curves[name] = precision_recall(
                        model.batch(run.features), correct_top1(run.ranked, d.positives)
                    )
            plot = plot_precision_recall(
                curves, a.out / f"pr_{d.name}.png", f"{d.name}: precision-recall over confidence"
            )
            print(f"wrote {plot}")
    r1 = {d.name: recall_at_n(runs[d.name, "hmm"].ranked, d.positives, (1,))[1] for d in sets}
    print(
        f"nordland_r1={r1['nordland']:.3f} demo_r1={r1['demo']:.3f} gardens_r1={r1['gardens']:.3f}"
        f" raw_pixels_r1={r1['raw_pixels']:.3f}"
    )


if __name__ == "__main__":
    main()
