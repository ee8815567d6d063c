"""
Matches a robot can act on: the pipeline's configurations on every data set, as the node runs them.

    .venv/bin/python bench/bench_matching.py [--datasets nordland demo gardens] [--work DIR]

For each data set a map is built with the default model and the xfeat re-ranker's local
features (`vpr-ros build-map --rerank xfeat`), the queries are run frame by frame through
`Localizer.match` (the node's code) once per configuration: re-ranking none / xfeat times
temporal filter none / hmm. Printed per row: Recall@1 and @5, the precision of the pose priors
(best matches at or above the default min_confidence) and the fraction of frames that get one,
and the per-frame cost of re-ranking and filtering (median ms, from the pipeline's own latency).

Data sets (../shared/data; each is skipped, saying so, when absent):
- nordland: 3576 winter queries against 3576 summer places (64x32 px), right within 1 frame.
- demo: the synthetic route (`vpr_harness.demo.route`), map keyframes every 2 m, right within 10 m.
- gardens: ten Gardens Point places, day queries against the night map, right at the exact place
  (and within one place).
Ends with one line `nordland_r1=... demo_r1=... gardens_r1=...` for the node's defaults (rerank
auto = xfeat on these maps, temporal hmm).
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

import numpy as np

from common import SHARED_DATA

from vpr_ros.evaluation.evaluate import (  # noqa: E402
    extract_queries, format_table, ground_truth, report_rows, run_configurations,
)
from vpr_ros.search.faiss_index import IndexConfig  # noqa: E402
from vpr_ros.rerank import create_reranker  # noqa: E402
from vpr_ros.inference.factory import create_extractor  # noqa: E402
from vpr_ros.localizer import Localizer, LocalizerConfig  # noqa: E402
from vpr_ros.maps.build import build_map  # noqa: E402
from vpr_ros.maps.mapdir import load_map  # noqa: E402
from vpr_ros.maps.sources import BagSource, FolderSource  # noqa: E402

RERANKER = "xfeat"


def sources(name: str, work: Path):
    """
    Return a data set's (map source, query source factory, threshold_m, frame tolerances).

    None when the data set is absent.
    """
    if name == "nordland":
        root = SHARED_DATA / "nordland_trimmed"
        if not root.is_dir():
            return None
        return (FolderSource(root / "summer"), lambda: FolderSource(root / "winter"), None, (1,))
    if name == "gardens":
        root = SHARED_DATA / "gardens_point_sample"
        if not root.is_dir():
            return None
        return (FolderSource(root / "night"), lambda: FolderSource(root / "day"), None, (0, 1))
    if name == "demo":
        from vpr_harness.demo.route import (
            COMPRESSED_CAMERA_TOPIC,
            GPS_TOPIC,
            RECOMMENDED_MATCH_RADIUS_M,
            write_demo_bags,
        )

        map_bag, query_bag = write_demo_bags(work / "bags", frames=400, compressed=True)
        return (
            BagSource([map_bag], COMPRESSED_CAMERA_TOPIC, GPS_TOPIC, min_distance_m=2.0),
            lambda: BagSource([query_bag], COMPRESSED_CAMERA_TOPIC, GPS_TOPIC),
            RECOMMENDED_MATCH_RADIUS_M,
            (None,),
        )
    raise ValueError(f"unknown data set {name!r}")


def costs(localizer: Localizer, queries, n: int = 200) -> dict[str, float]:
    """Median per-frame ms of the re-ranking and temporal stages over the first ``n`` queries."""
    stages: dict[str, list[float]] = {}
    for q in range(min(n, len(queries.descriptors))):
        m = localizer.match(
            queries.descriptors[q], queries.local[q] if queries.local is not None else None
        )
        for stage in ("search", "rerank", "temporal"):
            if getattr(m.latency_ms, stage) is not None:
                stages.setdefault(stage, []).append(getattr(m.latency_ms, stage))
    return {stage: round(float(np.median(v)), 2) for stage, v in stages.items()}


def run(name: str, work: Path) -> dict | None:
    found = sources(name, work)
    if found is None:
        print(f"{name}: skipped, its data is absent under {SHARED_DATA}")
        return None
    map_source, query_source, threshold_m, tolerances = found
    extractor = create_extractor("baseline")
    reranker = create_reranker(RERANKER, extractor)
    map_dir = build_map(
        map_source,
        extractor,
        work / f"{name}_map",
        IndexConfig("auto"),
        allow_no_poses=threshold_m is None,
        reranker=reranker,
    )
    vpr_map = load_map(map_dir, extractor.describe())
    source = query_source()
    queries, frames = extract_queries(source, extractor, reranker, total=len(source))
    configs = [
        LocalizerConfig(top_k=20, rerank=r, temporal=t)
        for r in ("none", RERANKER)
        for t in ("none", "hmm")
    ]
    out = {}
    for tolerance in tolerances:
        positives, gt = ground_truth(vpr_map, frames, threshold_m or 0.0, tolerance)
        results = run_configurations(vpr_map, extractor, queries, positives, gt, configs)
        rows = report_rows(results)
        for config, (row_name, row) in zip(configs, rows.items()):
            row["cost_ms"] = costs(Localizer(vpr_map, extractor, config), queries)
        print(f"\n{name}: {len(frames)} queries against {len(vpr_map)} places, right {gt}")
        print(format_table(rows))
        print(
            "per-frame cost, median ms: "
            + "; ".join(f"{k}: {v['cost_ms']}" for k, v in rows.items())
        )
        out[gt] = rows
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.strip().splitlines()[0])
    parser.add_argument("--datasets", nargs="+", default=["nordland", "demo", "gardens"])
    parser.add_argument(
        "--work", type=Path, help="working directory (default: a new temporary one)"
    )
    parser.add_argument("--json", type=Path, help="also write every row here")
    a = parser.parse_args()
    work = a.work or Path(tempfile.mkdtemp(prefix="vpr_matching_"))
    work.mkdir(parents=True, exist_ok=True)
    results = {name: r for name in a.datasets if (r := run(name, work)) is not None}
    if a.json:
        a.json.write_text(json.dumps(results, indent=2) + "\n")
    best = f"baseline + {RERANKER} + hmm"
    print(
        " ".join(
            f"{name}_r1={next(iter(rows.values()))[best]['recall']['R@1']:.3f}"
            for name, rows in results.items()
        )
    )


if __name__ == "__main__":
    main()
