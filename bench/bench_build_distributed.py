"""
Map building on Ray: the same bags built with 1 worker and with 2 workers, in one run.

Several synthetic demo bags (the demo route rendered in other cities, 2 drives each) are built
into one map by ``build-map --workers N`` on a private Ray on 127.0.0.1, for N = 1 and 2,
alternating (1, 2, 1, 2, ...) so load from other processes hits both alike; the best run of each
counts. A worker's share of the cores is fixed by the build (1 worker: all cores; 2: half each),
so the comparison is on the same cores. Timed: extraction of every bag on the workers plus
merging and writing the map (``extract_s``), after the workers are up; Ray's start and the
models' loading (``start_s``) are printed apart: a fixed cost per build that a fleet's thousands
of bags make small. A one-process build (no Ray) of the same bags is printed for reference. Ends
with one line ``workers1_s=... workers2_s=... speedup=...``.

    python bench/bench_build_distributed.py [--model baseline] [--cities 2] [--frames 120]
        [--repeats 2]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from common import IMAGE_TOPIC, POSE_TOPIC, print_machine


def demo_bag_set(workdir: Path, cities: int, frames: int) -> list[Path]:
    """Map and query drives of ``cities`` demo cities: 2 x cities bags."""
    from vpr_harness.demo.route import write_demo_bags

    return [bag for seed in range(cities)
            for bag in write_demo_bags(workdir / f"city{seed}", frames=frames, seed=seed)]


def build_on_ray(bags: list[Path], model: str, workers: int, out: Path) -> tuple[float, float]:
    """Build on ``workers`` Ray workers; return (start_s, extract_s)."""
    from vpr_ros.search.faiss_index import IndexConfig
    from vpr_ros.maps.build import write_shards
    from vpr_ros.maps.distributed import ExtractorSpec, RayExtraction
    from vpr_ros.maps.sources import BagSource

    sources = [BagSource([bag], IMAGE_TOPIC, POSE_TOPIC, min_distance_m=0.0) for bag in bags]
    t0 = time.perf_counter()
    with RayExtraction(ExtractorSpec(model), workers) as ray:
        t1 = time.perf_counter()
        write_shards(out, ray.shards(sources), ray.model, IndexConfig())
        t2 = time.perf_counter()
    return t1 - t0, t2 - t1


def build_in_process(bags: list[Path], model: str, out: Path) -> float:
    from vpr_ros.inference.factory import create_extractor
    from vpr_ros.maps.build import build_map
    from vpr_ros.maps.sources import BagSource

    extractor = create_extractor(model)
    t0 = time.perf_counter()
    build_map(BagSource(bags, IMAGE_TOPIC, POSE_TOPIC, min_distance_m=0.0), extractor, out)
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.strip().splitlines()[0])
    ap.add_argument("--model", default="baseline", help="default: %(default)s")
    ap.add_argument(
        "--cities", type=int, default=2, help="demo cities, 2 bags each (default: %(default)s)"
    )
    ap.add_argument(
        "--frames", type=int, default=120, help="frames of each map drive (default: %(default)s)"
    )
    ap.add_argument("--repeats", type=int, default=2, help="runs of each (default: %(default)s)")
    a = ap.parse_args()

    print_machine()
    work = Path(tempfile.mkdtemp(prefix="vpr_bench_ray_"))
    bags = demo_bag_set(work / "bags", a.cities, a.frames)
    from vpr_ros.maps.sources import BagSource

    frames = sum(len(BagSource([b], IMAGE_TOPIC, POSE_TOPIC)) for b in bags)
    print(f"model {a.model}, {len(bags)} bags, {frames} frames of 640x480 (rosbag2, sqlite3)")
    print(f"one process, no Ray: {build_in_process(bags, a.model, work / 'map0'):.1f} s")
    runs: dict[int, list[tuple[float, float]]] = {1: [], 2: []}
    for _ in range(a.repeats):
        for workers in (1, 2):
            start, extract = build_on_ray(bags, a.model, workers, work / f"map{workers}")
            runs[workers].append((start, extract))
            print(
                f"{workers} Ray worker(s): start (Ray + model) {start:.1f} s, extract + merge +"
                f" write {extract:.1f} s ({frames / extract:.1f} img/s)",
                flush=True,
            )
    best = {w: min(e for _, e in r) for w, r in runs.items()}
    start = {w: min(s for s, _ in r) for w, r in runs.items()}
    print(
        f"best: 1 worker {best[1]:.1f} s (+{start[1]:.1f} s start), 2 workers {best[2]:.1f} s"
        f" (+{start[2]:.1f} s start); whole command speed-up"
        f" {(best[1] + start[1]) / (best[2] + start[2]):.2f}"
    )
    print(f"workers1_s={best[1]:.2f} workers2_s={best[2]:.2f} speedup={best[1] / best[2]:.2f}")


if __name__ == "__main__":
    main()
