"""
Recall@1 of the default model with PCA to several dims (plain and whitened).

On Nordland and the demo route:

    .venv/bin/python bench/bench_pca_recall.py [--dims 2048 1024 512 256 128]
        [--demo-dims 128 64 32]

Each row is a real map (``write_map`` with a flat index, PCA fitted on the map's own
descriptors) searched with the real query path (``PlaceIndex.search`` projects the
queries).  Nordland: all 3576 winter queries against the 3576 summer places, tolerance
1 frame.  Demo route: the synthetic drive's 357 query frames against its 199-place map,
10 m; a PCA cannot have more dims than the map has places minus one, so the demo's dims
stay below 199.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import numpy as np

import common
from vpr_harness.demo.route import RECOMMENDED_MATCH_RADIUS_M
from vpr_ros.evaluation.evaluate import Queries, evaluate, ground_truth
from vpr_ros.localizer import Localizer, LocalizerConfig
from vpr_ros.search.faiss_index import IndexConfig
from vpr_ros.inference.factory import create_extractor
from vpr_ros.inference.batch import extract_frames
from vpr_ros.maps.build import build_map
from vpr_ros.maps.mapdir import load_map, write_map
from vpr_ros.maps.places import Place
from vpr_ros.maps.sources import BagSource, FolderSource

EXACT = IndexConfig("flat", pca_dim=None)  # the model's own dims: the reference row
NORDLAND = Path(__file__).resolve().parents[2] / "shared" / "data" / "nordland_trimmed"


def recall_rows(
    base_map: Path,
    queries: np.ndarray,
    frames: list,
    dims: list[int],
    threshold_m: float | None,
    tolerance: int | None,
    workdir: Path,
) -> list[tuple[str, float, float]]:
    """(PCA, R@1, explained variance) for the map as built and rebuilt with each PCA."""
    m = load_map(base_map)
    positives, gt = ground_truth(m, frames, threshold_m, tolerance)
    plain = LocalizerConfig(top_k=20, temporal="none")
    rows = [
        (
            "none",
            evaluate(Localizer(m, None, plain), Queries(queries), positives, gt).recalls[1],
            1.0,
        )
    ]
    for dim in dims:
        for whiten in (False, True):
            path = write_map(
                workdir / f"pca{dim}{'w' if whiten else ''}",
                m.descriptors,
                m.places,
                m.model,
                IndexConfig("flat", pca_dim=dim, whiten=whiten),
                m.manifest.sources,
            )
            pm = load_map(path)
            pca = pm.index.pca
            rows.append(
                (
                    f"{dim}{' whitened' if whiten else ''}",
                    evaluate(Localizer(pm, None, plain), Queries(queries), positives, gt).recalls[
                        1
                    ],
                    pca.explained_variance,
                )
            )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.strip().splitlines()[0])
    parser.add_argument("--dims", type=int, nargs="+", default=[2048, 1024, 512, 256, 128])
    parser.add_argument("--demo-dims", type=int, nargs="+", default=[128, 64, 32])
    a = parser.parse_args()
    extractor = create_extractor("baseline")
    work = Path(tempfile.mkdtemp(prefix="vpr_pca_"))
    tables = {}
    if NORDLAND.is_dir():
        source = FolderSource(NORDLAND / "summer")
        descriptors, frames = extract_frames(
            source, extractor, total=len(source), desc="nordland map"
        )
        # no positions: ground truth is by frame index (place i = summer frame i)
        write_map(
            work / "nordland",
            descriptors,
            [Place(i, 0) for i in range(len(frames))],
            extractor.describe(),
            EXACT,
            source.describe(),
        )
        source = FolderSource(NORDLAND / "winter")
        queries, frames = extract_frames(
            source, extractor, total=len(source), desc="nordland queries"
        )
        tables["Nordland, tolerance 1"] = recall_rows(
            work / "nordland", queries, frames, a.dims, None, 1, work
        )
    else:
        print(f"{NORDLAND} is absent: Nordland skipped")
    _, map_bag, query_bag = common.demo_bags(400, work)
    build_map(
        BagSource([map_bag], common.IMAGE_TOPIC, common.POSE_TOPIC, min_distance_m=2.0),
        extractor,
        work / "demo",
        EXACT,
    )
    source = BagSource([query_bag], common.IMAGE_TOPIC, common.POSE_TOPIC, min_distance_m=0.0)
    queries, frames = extract_frames(source, extractor, total=len(source), desc="demo queries")
    tables[f"demo route, {RECOMMENDED_MATCH_RADIUS_M:g} m"] = recall_rows(
        work / "demo", queries, frames, a.demo_dims, RECOMMENDED_MATCH_RADIUS_M, None, work
    )
    for name, rows in tables.items():
        print(f"\n| {name}: PCA dims | R@1 | variance kept |\n|---|---|---|")
        for pca, r1, var in rows:
            print(f"| {pca} | {r1:.3f} | {var:.3f} |")
    print(
        " ".join(
            f"{name.split(',')[0].split()[0].lower()}_r1_{pca.replace(' whitened', 'w')}={r1:.3f}"
            for name, rows in tables.items()
            for pca, r1, _ in rows
        )
    )


if __name__ == "__main__":
    main()
