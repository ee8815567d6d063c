"""
Pose priors under every replay condition, on every data set, with leave-one-data-set-out fits.

    .venv/bin/python bench/bench_conditions.py [--cache DIR] [--refresh] [--sets a,b] [--out DIR]

Data sets as in bench_temporal.py (Nordland, the demo route, the Gardens Point sample, raw pixels
on the demo route). Conditions (``vpr_ros.evaluation.conditions``): in order, reversed, shuffled
chunks of 10 and 25, double speed, stops, off the map (a map of the first half, every query).

Each set is reported with models fitted without it (leave one data set out): the on-map model
on every other set, the confidence (P(right | on the map), ``vpr_ros.confidence``) on the other
sets of the same descriptor, from every condition's frames (raw pixels, a descriptor of its own
with one set, gets the baseline's). The models fitted on all sets are printed for shipping
(``vpr_ros.on_map.DEFAULT_ON_MAP_MODEL``, ``vpr_ros.confidence.DEFAULT_MODELS``). Ends with one
line of ``<set>_prior_precision=... <set>_off_map_prior_rate=... <set>_ece=...`` over all
conditions of each set.
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

import numpy as np

import bench_temporal as sets_of  # the data sets and their cached descriptors
import common
from vpr_ros.evaluation.calibration import expected_calibration_error, plot_reliability
from vpr_ros.evaluation.conditions import prefix_map, run_conditions
from vpr_ros.evaluation.recall import positives_by_distance, positives_by_frame
from vpr_ros.localizer import Localizer, LocalizerConfig
from vpr_ros.confidence import ConfidenceModel, fit_confidence
from vpr_ros.on_map import fit_on_map, peak

FAR = 3  # "off the map": farther than three thresholds
CANDIDATES = 10  # the retrieval's candidates per frame, as the Localizer searches them


def _far_positives(d) -> list[np.ndarray]:
    if d.map_xy is None:  # frame tolerance: 1 (Nordland, Gardens Point within +-1)
        return positives_by_frame(np.arange(len(d.query_descriptors)),
                                  np.arange(len(d.map_descriptors)), FAR)
    query_xy = d.query_xy
    origin = d.map_xy.mean(0)
    return positives_by_distance(query_xy - origin, d.map_xy - origin,
                                 FAR * sets_of.DEMO_THRESHOLD_M)


def on_map_table(d, work: Path) -> dict[str, np.ndarray]:
    """Novelty of every query's best similarity against the map of the first half; on / far."""
    vpr_map = sets_of.write_dataset_map(d, work)
    half = prefix_map(vpr_map, len(vpr_map) // 2, work / f"{d.name}_half")
    scores, _ = half.index.search(np.ascontiguousarray(d.query_descriptors), CANDIDATES)
    novelty = np.array([half.null_similarity.novelty(float(s)) for s in scores[:, 0]])
    n = len(half)
    on = np.array([np.any(p < n) for p in d.positives])
    far = np.array([not np.any(p < n) for p in _far_positives(d)])
    return {"novelty": novelty, "peak": np.array([peak(s) for s in scores]), "on": on, "far": far}


def fit_confidence_models(frames: list) -> dict[tuple[str, ...], ConfidenceModel]:
    """
    Fit P(right | on the map) per feature set on the on-map frames of ``frames`` (``Frames``).

    Frames answered by the filter and by the retrieval alone have different features; each set
    gets its own model where both right and wrong frames exist.
    """
    groups: dict[tuple[str, ...], tuple[list, list]] = {}
    for f in frames:
        for features, right, on in zip(f.confidence_features, f.right, f.on_map):
            if on:
                table, labels = groups.setdefault(tuple(features), ([], []))
                table.append(features)
                labels.append(right)
    models = {}
    for key, (table, labels) in groups.items():
        if len(set(labels)) == 2:
            models[key] = fit_confidence({k: np.array([t[k] for t in table]) for k in key},
                                         np.array(labels), key)
    return models


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.strip().splitlines()[0])
    parser.add_argument("--cache", type=Path,
                        default=Path.home() / ".cache" / "vpr_ros" / "bench_temporal",
                        help="descriptor cache directory (default: %(default)s)")
    parser.add_argument("--refresh", action="store_true", help="recompute the cached descriptors")
    parser.add_argument("--sets", default="nordland,demo,gardens,raw_pixels",
                        help="data sets (default: %(default)s)")
    parser.add_argument("--out", type=Path, default=Path("bench_out/conditions"),
                        help="reliability diagrams and rows.json (default: %(default)s)")
    args = parser.parse_args()
    common.print_machine()
    loaders = {
        "nordland": lambda: sets_of.nordland(args.cache, args.refresh),
        "demo": lambda: sets_of.demo(args.cache, args.refresh),
        "gardens": lambda: sets_of.gardens(args.cache, args.refresh),
        "raw_pixels": lambda: sets_of.demo(args.cache, args.refresh, "raw-pixels"),
    }
    data = [loaders[name]() for name in args.sets.split(",")]
    args.out.mkdir(parents=True, exist_ok=True)
    rows, last = [], []
    with tempfile.TemporaryDirectory(prefix="vpr_bench_conditions_") as tmp:
        work = Path(tmp)
        tables = {d.name: on_map_table(d, work / "fit") for d in data}
        shipped = fit_on_map([tables[d.name] for d in data])
        print(f"on-map model fitted on {', '.join(tables)}: {shipped}")
        maps = {d.name: sets_of.write_dataset_map(d, work / "maps") for d in data}
        on_map_models = {d.name: fit_on_map([tables[n] for n in tables if n != d.name]
                                            or [tables[d.name]]) for d in data}

        def replay_all(d, confidence_models=None):
            make = lambda m: Localizer(  # noqa: E731
                m, None, LocalizerConfig(top_k=5), on_map_model=on_map_models[d.name],
                confidence_models=confidence_models)
            return run_conditions(maps[d.name], make, d.query_descriptors, d.positives,
                                  _far_positives(d), work / d.name, travelled_m=d.travelled_m)

        # Pass 1 records what each frame's confidence is computed from; pass 2 replays every set
        # with the confidence fitted on the other sets of the same descriptor.
        first = {d.name: replay_all(d) for d in data}
        shipped_confidence = fit_confidence_models(
            [f for d in data if d.model == "baseline" for _, f in first[d.name]])
        print(f"confidence fitted on every baseline set: {shipped_confidence}")
        for d in data:
            fitted_on = [o.name for o in data if o.model == "baseline" and o.name != d.name]
            models = fit_confidence_models([f for n in fitted_on for _, f in first[n]])
            results = replay_all(d, models)
            confidence = np.concatenate([f.confidence for _, f in results])
            right = np.concatenate([f.right for _, f in results])
            ece = expected_calibration_error(confidence, right)
            plot_reliability(confidence, right, args.out / f"reliability_{d.name}.png",
                             f"{d.name}: every condition (fitted without it)")
            print(f"\n{d.name} ({d.ground_truth}; on-map model fitted without it: "
                  f"{on_map_models[d.name]}; confidence fitted on {', '.join(fitted_on)}); "
                  f"ECE {ece:.3f}")
            print("| condition | frames | R@1 (plain) | priors right | priors per on-map frame |"
                  " off-map frames | off-map prior rate | jumps | frames to recover (max) |")
            print("|---|---|---|---|---|---|---|---|---|")
            priors = right_priors = off = off_priors = 0
            for row, frames in results:
                s = row.summary()
                rows.append({"set": d.name, **s, "ece_set": round(ece, 4)})
                print(f"| {s['condition']} | {s['frames']} | {s['recall_at_1']} "
                      f"({s['plain_recall_at_1']}) | {s['prior_precision']} | "
                      f"{s['prior_fraction']} | {s['off_map_frames']} | "
                      f"{s['off_map_prior_rate']} | {s['jumps']} | "
                      f"{s['frames_to_recover_max']} ({s['jumps_never_recovered']} never) |",
                      flush=True)
                priors += int(frames.prior.sum())
                right_priors += int((frames.prior & frames.right).sum())
                off += int(frames.far.sum())
                off_priors += int((frames.prior & frames.far).sum())
            last.append(f"{d.name}_prior_precision={right_priors / max(priors, 1):.4f} "
                        f"{d.name}_off_map_prior_rate={off_priors / max(off, 1):.4f} "
                        f"{d.name}_ece={ece:.4f}")
    (args.out / "rows.json").write_text(json.dumps(rows, indent=1) + "\n")
    print(" ".join(last))


if __name__ == "__main__":
    main()
