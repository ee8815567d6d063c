"""
Pose priors under every replay condition, on every data set, with leave-one-data-set-out fits.

    .venv/bin/python bench/bench_conditions.py [--cache DIR] [--refresh] [--sets a,b] [--out DIR]

Data sets as in bench_temporal.py (Nordland, the demo route, the Gardens Point sample, raw pixels
on the demo route). Conditions (``vpr_ros.evaluation.conditions``): in order, reversed, shuffled
chunks of 10 and 25, double speed, stops, off the map (a map of the first half, every query).

The on-map model and the confidence are each fitted on every data set but the one reported
(leave one data set out) and the models fitted on all of them are printed for shipping
(``vpr_ros.on_map.DEFAULT_ON_MAP_MODELS``). Ends with one line of
``<set>_prior_precision=... <set>_off_map_prior_rate=...`` over all conditions of each set.
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
from vpr_ros.on_map import OnMapModel, fit_on_map, peak

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
        for d in data:
            others = [tables[n] for n in tables if n != d.name] or [tables[d.name]]
            model: OnMapModel = fit_on_map(others)
            vpr_map = sets_of.write_dataset_map(d, work / "maps")
            make = lambda m: Localizer(m, None, LocalizerConfig(top_k=5), on_map_model=model)  # noqa: E731,E501
            results = run_conditions(vpr_map, make, d.query_descriptors, d.positives,
                                     _far_positives(d), work / d.name,
                                     travelled_m=d.travelled_m)
            confidence = np.concatenate([f.confidence for _, f in results])
            right = np.concatenate([f.right for _, f in results])
            ece = expected_calibration_error(confidence, right)
            plot_reliability(confidence, right, args.out / f"reliability_{d.name}.png",
                             f"{d.name}: every condition (on-map model fitted without it)")
            print(f"\n{d.name} ({d.ground_truth}; on-map model fitted without it: {model}); "
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
                        f"{d.name}_off_map_prior_rate={off_priors / max(off, 1):.4f}")
    (args.out / "rows.json").write_text(json.dumps(rows, indent=1) + "\n")
    print(" ".join(last))


if __name__ == "__main__":
    main()
