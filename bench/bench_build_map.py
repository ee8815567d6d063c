"""
`build-map` throughput against bare descriptor extraction of the same frames, in one run.

Goal (issue 2): build-map images/s >= 0.9 x bare extraction images/s.

    python bench/bench_build_map.py [--model baseline] [--frames 300]
"""

from __future__ import annotations

import argparse
import time

from common import IMAGE_TOPIC, POSE_TOPIC, demo_bags


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.strip().splitlines()[0])
    ap.add_argument("--model", default="baseline")
    ap.add_argument("--frames", type=int, default=300)
    ap.add_argument("--batch-size", type=int, default=8)
    a = ap.parse_args()

    from vpr_ros.inference.factory import create_extractor
    from vpr_ros.maps.build import build_map
    from vpr_ros.maps.sources import BagSource

    work, map_bag, _ = demo_bags(a.frames)
    extractor = create_extractor(a.model)
    source = BagSource([map_bag], IMAGE_TOPIC, POSE_TOPIC, min_distance_m=0.0)

    images = [f.image for f in source]  # decoded once, held in memory
    extractor.extract(images[: a.batch_size])  # warm-up
    t0 = time.perf_counter()
    for i in range(0, len(images), a.batch_size):
        # preprocessing + network, as the extractor does it
        extractor.extract(images[i:i + a.batch_size])
    bare = len(images) / (time.perf_counter() - t0)

    t0 = time.perf_counter()
    build_map(source, extractor, work / "map", batch_size=a.batch_size)
    full = len(images) / (time.perf_counter() - t0)
    print(f"model {a.model}, {len(images)} frames of 640x480 from a rosbag2 (sqlite3)")
    print(f"bare extraction (decoded images in memory -> descriptors): {bare:.1f} img/s")
    print(
        f"build-map (read bag, decode, interpolate poses, extract, index, write): {full:.1f} img/s"
    )
    print(f"ratio build-map / bare: {full / bare:.3f} (goal >= 0.9)")


if __name__ == "__main__":
    main()
