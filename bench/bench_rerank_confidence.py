"""
The re-ranking confidence model: fitted on one world's demo drive, checked on another's.

    .venv/bin/python bench/bench_rerank_confidence.py [--fit-seed 1] [--check-seed 0] [--work DIR]

For each world (``StreetWorld`` seed) this renders the demo's two drives as rosbag2 (the query
drive leaves the mapped streets for a stretch and is carried once along the route), builds a map
from the first with XFeat local features (``build-map --rerank xfeat``), and replays the query
drive under every condition of ``vpr_ros.evaluation.conditions`` through the ``Localizer`` as
the node runs it (re-ranking the top 10, the HMM filter). The confidence model over
(margin, support, rerank) is fitted on the on-map frames of the fitting world that the filter
answered (``vpr_ros.confidence.DEFAULT_MODELS``); the checking world is replayed with the fitted
and with the shipped model. Ground truth: the true camera positions, within 10 m; off the map:
farther than 30 m from every map place. Ends with one line
``fitted_prior_precision=... fitted_off_map_prior_rate=... shipped_prior_precision=...``
over every condition of the checking world.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

from bench_conditions import fit_confidence_models
from common import print_machine

from vpr_harness.demo.route import (
    COMPRESSED_CAMERA_TOPIC,
    demo_traversals,
    local_to_utm,
    write_demo_bags,
)
from vpr_ros.confidence import FEATURES_TEMPORAL_RERANK, ConfidenceModel
from vpr_ros.evaluation.conditions import Frames, markdown_table, run_conditions
from vpr_ros.evaluation.evaluate import extract_queries
from vpr_ros.evaluation.recall import positives_by_distance
from vpr_ros.inference.factory import create_extractor
from vpr_ros.localizer import Localizer, LocalizerConfig
from vpr_ros.maps.build import build_map
from vpr_ros.maps.mapdir import load_map
from vpr_ros.maps.sources import BagSource
from vpr_ros.rerank import create_reranker

THRESHOLD_M = 10.0
FAR = 3  # off the map: farther than three thresholds from every map place
KEYFRAME_M = 2.0  # build-map's default --min-distance


def replay_world(seed: int, frames: int, work: Path, extractor, reranker,
                 models: dict[str, dict]) -> dict[str, list[Frames]]:
    """Every condition of one world's query drive, once per set of confidence models."""
    bags = work / f"world_{seed}"
    map_bag, query_bag = bags / "map", bags / "query"
    if not query_bag.exists():  # kept from an earlier run with --work
        write_demo_bags(bags, frames=frames, seed=seed, compressed=True, excursions=True)
    vpr_map = load_map(build_map(
        BagSource([map_bag], COMPRESSED_CAMERA_TOPIC, "/gps/fix", min_distance_m=KEYFRAME_M),
        extractor, work / f"map_{seed}", reranker=reranker,
    ))
    source = BagSource([query_bag], COMPRESSED_CAMERA_TOPIC, "/gps/fix", min_distance_m=0.0)
    queries, _ = extract_queries(source, extractor, reranker, total=len(source))
    # the truth, not GPS: a fix interpolated across the jump lies between the two places
    query_xy = local_to_utm(demo_traversals(frames, excursions=True)[1].frame_positions())
    map_xy = vpr_map.places.positions()[:, :2]
    origin = map_xy.mean(0)
    positives, far = (positives_by_distance(query_xy - origin, map_xy - origin, radius)
                      for radius in (THRESHOLD_M, FAR * THRESHOLD_M))
    out = {}
    for label, confidence_models in models.items():
        make = lambda m: Localizer(  # noqa: E731
            m, extractor, LocalizerConfig(top_k=20), confidence_models=confidence_models)
        results = run_conditions(vpr_map, make, queries.descriptors, positives, far,
                                 work / f"conditions_{seed}_{label}", queries.local)
        print(f"\nworld seed {seed}, confidence {label}:")
        print(markdown_table([row.summary() for row, _ in results]), flush=True)
        out[label] = [f for _, f in results]
    return out


def totals(frames: list[Frames]) -> tuple[float, float]:
    """Share of right priors, share of off-map frames with a prior, over every condition."""
    priors = sum(int(f.prior.sum()) for f in frames)
    right = sum(int((f.prior & f.right).sum()) for f in frames)
    far = sum(int(f.far.sum()) for f in frames)
    far_priors = sum(int((f.prior & f.far).sum()) for f in frames)
    return right / max(priors, 1), far_priors / max(far, 1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.strip().splitlines()[0])
    parser.add_argument("--fit-seed", type=int, default=1,
                        help="world the model is fitted on (default: %(default)s)")
    parser.add_argument("--check-seed", type=int, default=0,
                        help="world it is checked on, make demo's (default: %(default)s)")
    parser.add_argument("--frames", type=int, default=400,
                        help="frames of the map drive (default: %(default)s)")
    parser.add_argument("--work", type=Path, default=None,
                        help="keep bags and maps here (default: a temporary directory)")
    args = parser.parse_args()
    print_machine()
    extractor = create_extractor("baseline")
    reranker = create_reranker("xfeat", extractor)
    with tempfile.TemporaryDirectory(prefix="bench_rerank_confidence_") as tmp:
        work = args.work or Path(tmp)
        fit_frames = replay_world(args.fit_seed, args.frames, work, extractor, reranker,
                                  {"shipped": {}})["shipped"]
        fitted = fit_confidence_models(fit_frames)[FEATURES_TEMPORAL_RERANK]
        model = ConfidenceModel(fitted.features, tuple(round(w, 4) for w in fitted.weights),
                                round(fitted.bias, 4))
        print(f"\nfitted on world seed {args.fit_seed}: {model}")
        check = replay_world(args.check_seed, args.frames, work, extractor, reranker,
                             {"fitted": {FEATURES_TEMPORAL_RERANK: model}, "shipped": {}})
    fields = []
    for label, frames in check.items():
        precision, off_map = totals(frames)
        fields.append(f"{label}_prior_precision={precision:.4f} "
                      f"{label}_off_map_prior_rate={off_map:.4f}")
    print(" ".join(fields))


if __name__ == "__main__":
    main()
